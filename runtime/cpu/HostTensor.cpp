//===- HostTensor.cpp - tensors in host memory ------------------------------===//

#include "runtime/cpu/HostTensor.h"

#include "mlir/IR/BuiltinTypes.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <cstdlib>

namespace kiln::cpu {

llvm::StringRef dtypeName(DType dtype) {
  switch (dtype) {
  case DType::F64: return "f64";
  case DType::F32: return "f32";
  case DType::BF16: return "bf16";
  case DType::F16: return "f16";
  case DType::I64: return "i64";
  case DType::I32: return "i32";
  case DType::I1: return "i1";
  }
  return "?";
}

size_t dtypeSize(DType d) {
  switch (d) {
  case DType::F64: case DType::I64: return 8;
  case DType::F32: case DType::I32: return 4;
  case DType::BF16: case DType::F16: return 2;
  case DType::I1: return 1;
  }
  return 0;
}

std::optional<DType> dtypeOf(mlir::Type t) {
  if (t.isF64()) return DType::F64;
  if (t.isF32()) return DType::F32;
  if (t.isBF16()) return DType::BF16;
  if (t.isF16()) return DType::F16;
  if (t.isInteger(64)) return DType::I64;
  if (t.isInteger(32)) return DType::I32;
  if (t.isInteger(1)) return DType::I1;
  return std::nullopt;
}

mlir::Type mlirType(mlir::MLIRContext *ctx, DType dtype) {
  switch (dtype) {
  case DType::F64: return mlir::Float64Type::get(ctx);
  case DType::F32: return mlir::Float32Type::get(ctx);
  case DType::BF16: return mlir::BFloat16Type::get(ctx);
  case DType::F16: return mlir::Float16Type::get(ctx);
  case DType::I64: return mlir::IntegerType::get(ctx, 64);
  case DType::I32: return mlir::IntegerType::get(ctx, 32);
  case DType::I1: return mlir::IntegerType::get(ctx, 1);
  }
  return {};
}

uint16_t floatToBF16Bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) // nan: keep it a (quiet) nan
    return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u); // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

float bf16BitsToFloat(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

float roundToBF16(float x) { return bf16BitsToFloat(floatToBF16Bits(x)); }

uint16_t floatToF16Bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) // nan
    return static_cast<uint16_t>(sign | 0x7e00u);
  if (absu >= 0x477ff000u) // rounds to >= 65520: inf
    return static_cast<uint16_t>(sign | 0x7c00u);
  if (absu < 0x38800000u) { // below the smallest normal half (2^-14): subnormal or 0
    // Scale so the half subnormal unit (2^-24) becomes 1, round to even.
    float f;
    std::memcpy(&f, &absu, 4);
    float scaled = f * 16777216.0f; // 2^24
    float r = std::nearbyint(scaled); // default rounding mode: ties to even
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(r));
  }
  // Normal: rebias the exponent (127 -> 15) and round the mantissa 23 -> 10 bits.
  uint32_t h = absu - (112u << 23);
  h += 0xfffu + ((h >> 13) & 1u);
  return static_cast<uint16_t>(sign | (h >> 13));
}

float f16BitsToFloat(uint16_t bits) {
  uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  uint32_t exp = (bits >> 10) & 0x1fu, mant = bits & 0x3ffu;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  uint32_t u;
  if (exp == 31)
    u = sign | 0x7f800000u | (mant << 13);
  else
    u = sign | ((exp + 112u) << 23) | (mant << 13);
  std::memcpy(&f, &u, 4);
  return f;
}

float roundToF16(float x) { return f16BitsToFloat(floatToF16Bits(x)); }

int64_t product(llvm::ArrayRef<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::optional<int64_t> checkedBytes(llvm::ArrayRef<int64_t> shape, int64_t elementBytes) {
  int64_t n = elementBytes;
  for (int64_t d : shape)
    if (d < 0 || llvm::MulOverflow(n, d, n))
      return std::nullopt;
  return n;
}

std::vector<int64_t> stridesOf(llvm::ArrayRef<int64_t> shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (int64_t i = static_cast<int64_t>(shape.size()) - 2; i >= 0; --i)
    strides[i] = strides[i + 1] * shape[i + 1];
  return strides;
}

HostTensor::HostTensor(DType dtype, std::vector<int64_t> shape)
    : HostTensor(dtype, std::move(shape), /*zero=*/true) {}

HostTensor HostTensor::uninitialized(DType dtype, std::vector<int64_t> shape) {
  return HostTensor(dtype, std::move(shape), /*zero=*/false);
}

namespace {

/// 64-byte aligned storage (vector loads), or null when memory is short.
std::shared_ptr<void> allocateStorage(size_t bytes, bool zero) {
  void *p = std::aligned_alloc(64, (std::max<size_t>(1, bytes) + 63) / 64 * 64);
  if (!p)
    return nullptr;
  if (zero)
    std::memset(p, 0, bytes);
  return std::shared_ptr<void>(p, std::free);
}

} // namespace

HostTensor::HostTensor(DType dtype, std::vector<int64_t> shape, bool zero)
    : dtype_(dtype), shape_(std::move(shape)), numel_(product(shape_)) {
  // Shapes here come from verified IR or from create(), which checks them;
  // running out of memory is fatal, with a message (tools install a handler
  // that prints it as an error, never a crash).
  size_t bytes = static_cast<size_t>(numel_) * storageSize(dtype_);
  storage_ = allocateStorage(bytes, zero);
  if (!storage_)
    llvm::report_bad_alloc_error(
        llvm::formatv("out of host memory allocating a {0} tensor of {1} bytes", typeString(), bytes)
            .str()
            .c_str());
}

llvm::Expected<HostTensor> HostTensor::create(DType dtype, std::vector<int64_t> shape, bool zero) {
  auto fail = [&](const llvm::Twine &why) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), "cannot allocate a " +
                                                                       cpu::typeString(dtype, shape) +
                                                                       " tensor: " + why);
  };
  auto bytes = checkedBytes(shape, static_cast<int64_t>(storageSize(dtype)));
  if (!bytes)
    return fail("its size is negative or does not fit in 64 bits");
  HostTensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  t.numel_ = product(t.shape_);
  t.storage_ = allocateStorage(static_cast<size_t>(*bytes), zero);
  if (!t.storage_)
    return fail(llvm::formatv("out of host memory ({0} bytes)", *bytes));
  return t;
}

double HostTensor::get(int64_t i) const {
  switch (dtype_) {
  case DType::F64: return data<double>()[i];
  case DType::F32: case DType::BF16: case DType::F16: return data<float>()[i];
  default: return static_cast<double>(data<int64_t>()[i]);
  }
}

void HostTensor::set(int64_t i, double v) {
  switch (dtype_) {
  case DType::F64: data<double>()[i] = v; break;
  case DType::F32: data<float>()[i] = static_cast<float>(v); break;
  case DType::BF16: data<float>()[i] = roundToBF16(static_cast<float>(v)); break;
  case DType::F16: data<float>()[i] = roundToF16(static_cast<float>(v)); break;
  case DType::I1: data<int64_t>()[i] = v != 0.0; break;
  default: data<int64_t>()[i] = static_cast<int64_t>(v); break;
  }
}

HostTensor HostTensor::reshaped(std::vector<int64_t> shape) const {
  HostTensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

HostTensor HostTensor::clone() const {
  HostTensor t(dtype_, shape_);
  std::memcpy(t.raw(), raw(), static_cast<size_t>(numel_) * storageSize(dtype_));
  return t;
}

void HostTensor::roundToDType() {
  if (dtype_ != DType::BF16 && dtype_ != DType::F16)
    return;
  float *p = data<float>();
  if (dtype_ == DType::BF16)
    for (int64_t i = 0; i < numel_; ++i)
      p[i] = roundToBF16(p[i]);
  else
    for (int64_t i = 0; i < numel_; ++i)
      p[i] = roundToF16(p[i]);
}

std::string typeString(DType dtype, llvm::ArrayRef<int64_t> shape) {
  std::string s = dtypeName(dtype).str() + "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string HostTensor::typeString() const { return cpu::typeString(dtype_, shape_); }

} // namespace kiln::cpu
