//===- Units.cpp - byte sizes as people write them --------------------------===//

#include "support/Units.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstdlib>

namespace kiln {

llvm::Expected<int64_t> parseByteSize(llvm::StringRef text) {
  auto bad = [&](llvm::StringRef why) {
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        "'" + text + "' is not a size in bytes (" + why +
            "; e.g. 20GiB, 512MiB, 8GB or a number of bytes)");
  };
  llvm::StringRef s = text.trim();
  size_t split = 0;
  while (split < s.size() && (llvm::isDigit(s[split]) || s[split] == '.' || s[split] == 'e' ||
                              s[split] == 'E' || s[split] == '+' || s[split] == '-'))
    ++split;
  // "e" starts no unit kiln knows, so a number like 1e9 is read whole.
  llvm::StringRef number = s.take_front(split), unit = s.drop_front(split).trim();
  if (number.empty())
    return bad("no number");
  double value;
  if (number.getAsDouble(value) || !std::isfinite(value))
    return bad("'" + number.str() + "' is not a number");
  double scale = llvm::StringSwitch<double>(unit)
                     .Cases({"", "B"}, 1.0)
                     .Cases({"KiB", "kiB"}, 1024.0)
                     .Case("MiB", 1024.0 * 1024)
                     .Case("GiB", 1024.0 * 1024 * 1024)
                     .Case("TiB", 1024.0 * 1024 * 1024 * 1024)
                     .Cases({"kB", "KB"}, 1e3)
                     .Case("MB", 1e6)
                     .Case("GB", 1e9)
                     .Case("TB", 1e12)
                     .Default(0.0);
  if (scale == 0.0)
    return bad("unknown unit '" + unit.str() + "'");
  double bytes = value * scale;
  if (!(bytes >= 1))
    return bad("it must be at least one byte");
  if (bytes > 9.0e18)
    return bad("it is too large");
  return static_cast<int64_t>(std::llround(bytes));
}

std::string formatBytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (bytes >= (1ll << 30))
    return llvm::formatv("{0:f2} GiB", b / (1ll << 30)).str();
  if (bytes >= (1ll << 20))
    return llvm::formatv("{0:f2} MiB", b / (1ll << 20)).str();
  if (bytes >= (1ll << 10))
    return llvm::formatv("{0:f2} KiB", b / (1ll << 10)).str();
  return llvm::formatv("{0} B", bytes).str();
}

} // namespace kiln
