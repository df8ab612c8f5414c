//===- HostTensor.h - tensors in host memory for the CPU interpreter -------===//
//
// A HostTensor is an immutable-by-convention n-d array with shared storage
// (a reshape shares it). Storage types by dtype: f64 -> double; f32, bf16 and
// f16 -> float holding values exactly representable in the dtype (the
// interpreter rounds to nearest even after every op that produces them);
// i32, i64 and i1 -> int64_t.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CPU_HOSTTENSOR_H
#define KILN_RUNTIME_CPU_HOSTTENSOR_H

#include "mlir/IR/Types.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln::cpu {

enum class DType : uint8_t { F64, F32, BF16, F16, I64, I32, I1 };

llvm::StringRef dtypeName(DType dtype);
/// The dtype of an MLIR element type; nullopt for types kiln does not use.
std::optional<DType> dtypeOf(mlir::Type elementType);
mlir::Type mlirType(mlir::MLIRContext *ctx, DType dtype);
inline bool isFloat(DType d) { return d == DType::F64 || d == DType::F32 || d == DType::BF16 || d == DType::F16; }
/// Bytes of one element in host storage (not in the dtype itself).
inline size_t storageSize(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16 ? 4 : 8; }
/// Bytes of one element of the dtype itself (2 for bf16).
size_t dtypeSize(DType d);

/// Round-to-nearest-even to bf16 / f16 precision, returned as float.
float roundToBF16(float x);
float roundToF16(float x);
uint16_t floatToBF16Bits(float x);
float bf16BitsToFloat(uint16_t bits);
uint16_t floatToF16Bits(float x);
float f16BitsToFloat(uint16_t bits);

class HostTensor {
public:
  HostTensor() = default;
  /// A zero-filled tensor.
  HostTensor(DType dtype, std::vector<int64_t> shape);
  /// A tensor whose contents are unspecified, for kernels that write every
  /// element (saves the zero fill).
  static HostTensor uninitialized(DType dtype, std::vector<int64_t> shape);
  /// For shapes that come from outside (a file, a user): an error instead
  /// of a fatal one when the size overflows or memory is short.
  static llvm::Expected<HostTensor> create(DType dtype, std::vector<int64_t> shape,
                                           bool zero = true);

  DType dtype() const { return dtype_; }
  const std::vector<int64_t> &shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return numel_; }
  bool defined() const { return static_cast<bool>(storage_); }

  template <typename T> T *data() { return reinterpret_cast<T *>(storage_.get()); }
  template <typename T> const T *data() const { return reinterpret_cast<const T *>(storage_.get()); }
  void *raw() { return storage_.get(); }
  const void *raw() const { return storage_.get(); }

  /// Element i (row-major) as a double, whatever the dtype.
  double get(int64_t i) const;
  /// Sets element i, rounding to the dtype.
  void set(int64_t i, double v);

  /// A view with another shape of the same size, sharing storage.
  HostTensor reshaped(std::vector<int64_t> shape) const;
  /// A deep copy.
  HostTensor clone() const;
  /// Rounds every element to the dtype's precision (bf16/f16; no-op otherwise).
  void roundToDType();

  /// "f32[4, 8]"
  std::string typeString() const;

private:
  HostTensor(DType dtype, std::vector<int64_t> shape, bool zero);

  DType dtype_ = DType::F32;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::shared_ptr<void> storage_;
};

/// "f32[4, 8]"
std::string typeString(DType dtype, llvm::ArrayRef<int64_t> shape);

/// Row-major strides of a shape.
std::vector<int64_t> stridesOf(llvm::ArrayRef<int64_t> shape);
int64_t product(llvm::ArrayRef<int64_t> shape);
/// elementBytes × the product of `shape`, or nullopt when a dimension is
/// negative or the product overflows int64.
std::optional<int64_t> checkedBytes(llvm::ArrayRef<int64_t> shape, int64_t elementBytes);

} // namespace kiln::cpu

#endif // KILN_RUNTIME_CPU_HOSTTENSOR_H
