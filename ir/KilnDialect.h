//===- KilnDialect.h - the kiln dialect ------------------------------------===//

#ifndef KILN_IR_KILNDIALECT_H
#define KILN_IR_KILNDIALECT_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Dialect.h"

#include "ir/KilnDialect.h.inc"

#include <optional>
#include <string>

namespace kiln {

/// How the runtime initializes a parameter (argument attribute kiln.init).
struct ParamInit {
  enum class Kind { Zeros, Ones, Normal, Full };
  Kind kind = Kind::Zeros;
  /// Normal: mean 0 and this standard deviation; Full: every element's value.
  double stddev = 0.0;

  /// "zeros", "ones", "normal(0.02)" or "full(65536)".
  std::string str() const;
  /// Parses the form str() prints; nullopt when malformed.
  static std::optional<ParamInit> parse(llvm::StringRef text);

  static ParamInit zeros() { return {Kind::Zeros, 0.0}; }
  static ParamInit ones() { return {Kind::Ones, 0.0}; }
  static ParamInit normal(double stddev) { return {Kind::Normal, stddev}; }
  static ParamInit full(double value) { return {Kind::Full, value}; }
};

} // namespace kiln

#endif // KILN_IR_KILNDIALECT_H
