//===- Schedule.cpp - learning-rate schedules ------------------------------===//

#include "runtime/train/Schedule.h"

#include <algorithm>
#include <cmath>

namespace kiln {

double learningRate(const ScheduleOptions &o, int64_t step) {
  double minLr = o.maxLr * o.minLrRatio;
  if (step < o.warmupSteps)
    return o.maxLr * static_cast<double>(step + 1) / static_cast<double>(o.warmupSteps);
  if (o.kind == "constant")
    return o.maxLr;
  int64_t span = std::max<int64_t>(1, o.totalSteps - 1 - o.warmupSteps);
  double progress = std::clamp(static_cast<double>(step - o.warmupSteps) / span, 0.0, 1.0);
  if (o.kind == "linear")
    return o.maxLr + (minLr - o.maxLr) * progress;
  if (o.kind == "wsd") {
    double decayStart = 1.0 - o.decayFraction;
    if (progress <= decayStart)
      return o.maxLr;
    return o.maxLr + (minLr - o.maxLr) * (progress - decayStart) / std::max(o.decayFraction, 1e-12);
  }
  // cosine
  return minLr + 0.5 * (o.maxLr - minLr) * (1.0 + std::cos(M_PI * progress));
}

} // namespace kiln
