//===- Plot.cpp - the loss curve of a run as an SVG file -------------------===//

#include "train/Plot.h"

#include "support/Files.h"

#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>

namespace kiln::tooling {

namespace {

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `count` ticks.
double tickStep(double span, int count) {
  double raw = span / std::max(count, 1), mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag)
      return m * mag;
  return 10 * mag;
}

std::string escape(llvm::StringRef s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

} // namespace

llvm::Error writeLossPlot(llvm::StringRef path, llvm::ArrayRef<LossPoint> train,
                          llvm::ArrayRef<LossPoint> val, llvm::StringRef title) {
  const double W = 720, H = 440, left = 64, right = 20, top = 40, bottom = 48;
  double x0 = 0, x1 = 1, y0 = INFINITY, y1 = -INFINITY;
  for (auto series : {train, val})
    for (const LossPoint &p : series) {
      x1 = std::max(x1, p.step);
      if (std::isfinite(p.loss)) {
        y0 = std::min(y0, p.loss);
        y1 = std::max(y1, p.loss);
      }
    }
  if (!std::isfinite(y0)) {
    y0 = 0;
    y1 = 1;
  }
  double pad = std::max(0.05 * (y1 - y0), 1e-3);
  y0 = std::max(0.0, y0 - pad);
  y1 += pad;
  auto sx = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto sy = [&](double y) { return top + (y1 - y) / (y1 - y0) * (H - top - bottom); };

  std::string svg = llvm::formatv(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{2}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{3}</text>\n",
      W, H, W / 2, escape(title));
  // Axes and ticks.
  svg += llvm::formatv("<path d=\"M{0},{1} V{2} H{3}\" stroke=\"black\" fill=\"none\"/>\n", left,
                       top, H - bottom, W - right);
  double xs = tickStep(x1 - x0, 8), ys = tickStep(y1 - y0, 6);
  for (double x = std::ceil(x0 / xs) * xs; x <= x1 + 1e-9; x += xs)
    svg += llvm::formatv("<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\" stroke=\"#ddd\"/>"
                         "<text x=\"{0}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>\n",
                         sx(x), top, H - bottom, H - bottom + 16,
                         xs >= 1 ? llvm::formatv("{0:f0}", x).str() : llvm::formatv("{0:f2}", x).str());
  for (double y = std::ceil(y0 / ys) * ys; y <= y1 + 1e-9; y += ys)
    svg += llvm::formatv("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#ddd\"/>"
                         "<text x=\"{3}\" y=\"{4}\" text-anchor=\"end\">{5}</text>\n",
                         left, sy(y), W - right, left - 6, sy(y) + 4, llvm::formatv("{0:f2}", y));
  svg += llvm::formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">step</text>\n"
                       "<text x=\"16\" y=\"{2}\" text-anchor=\"middle\" transform=\"rotate(-90 16 "
                       "{2})\">loss (nats per token)</text>\n",
                       (left + W - right) / 2, H - 10, (top + H - bottom) / 2);
  auto polyline = [&](llvm::ArrayRef<LossPoint> series, const char *color, double width) {
    std::string points;
    for (const LossPoint &p : series)
      if (std::isfinite(p.loss))
        points += llvm::formatv("{0:f1},{1:f1} ", sx(p.step), sy(p.loss)).str();
    return llvm::formatv("<polyline points=\"{0}\" fill=\"none\" stroke=\"{1}\" "
                         "stroke-width=\"{2}\"/>\n",
                         points, color, width)
        .str();
  };
  svg += polyline(train, "#1f77b4", 1.2);
  svg += polyline(val, "#d62728", 2.0);
  for (const LossPoint &p : val)
    svg += llvm::formatv("<circle cx=\"{0:f1}\" cy=\"{1:f1}\" r=\"3\" fill=\"#d62728\"/>\n",
                         sx(p.step), sy(p.loss));
  svg += llvm::formatv("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"#1f77b4\" "
                       "stroke-width=\"2\"/><text x=\"{3}\" y=\"{4}\">train</text>\n"
                       "<line x1=\"{0}\" y1=\"{5}\" x2=\"{2}\" y2=\"{5}\" stroke=\"#d62728\" "
                       "stroke-width=\"2\"/><text x=\"{3}\" y=\"{6}\">val</text>\n",
                       W - 140, top + 14, W - 112, W - 106, top + 18, top + 32, top + 36);
  svg += "</svg>\n";
  return writeFileAtomically(path, svg);
}

} // namespace kiln::tooling
