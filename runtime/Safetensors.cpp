//===- Safetensors.cpp - read and write the safetensors format -------------===//

#include "runtime/Safetensors.h"

#include "runtime/AtomicFile.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <algorithm>

namespace kiln {

namespace {

llvm::Error error(llvm::StringRef path, const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "safetensors file '" + path + "': " + message);
}

const char *dtypeCode(cpu::DType d) {
  switch (d) {
  case cpu::DType::F64: return "F64";
  case cpu::DType::F32: return "F32";
  case cpu::DType::BF16: return "BF16";
  case cpu::DType::F16: return "F16";
  case cpu::DType::I64: return "I64";
  case cpu::DType::I32: return "I32";
  case cpu::DType::I1: return "BOOL";
  }
  return "?";
}

std::optional<cpu::DType> dtypeFromCode(llvm::StringRef code) {
  if (code == "F64") return cpu::DType::F64;
  if (code == "F32") return cpu::DType::F32;
  if (code == "BF16") return cpu::DType::BF16;
  if (code == "F16") return cpu::DType::F16;
  if (code == "I64") return cpu::DType::I64;
  if (code == "I32") return cpu::DType::I32;
  if (code == "BOOL") return cpu::DType::I1;
  return std::nullopt;
}

/// Appends the tensor's elements in the dtype's own encoding.
void appendBytes(std::string &out, const cpu::HostTensor &t) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    uint64_t bits = 0;
    size_t n = cpu::dtypeSize(t.dtype());
    switch (t.dtype()) {
    case cpu::DType::F64: { double v = t.data<double>()[i]; std::memcpy(&bits, &v, 8); break; }
    case cpu::DType::F32: { float v = t.data<float>()[i]; std::memcpy(&bits, &v, 4); break; }
    case cpu::DType::BF16: bits = cpu::floatToBF16Bits(t.data<float>()[i]); break;
    case cpu::DType::F16: bits = cpu::floatToF16Bits(t.data<float>()[i]); break;
    default: bits = static_cast<uint64_t>(t.data<int64_t>()[i]); break;
    }
    for (size_t k = 0; k < n; ++k)
      out += static_cast<char>((bits >> (8 * k)) & 0xFF);
  }
}

void readBytes(cpu::HostTensor &t, const char *p) {
  size_t n = cpu::dtypeSize(t.dtype());
  for (int64_t i = 0; i < t.numel(); ++i, p += n) {
    uint64_t bits = 0;
    for (size_t k = 0; k < n; ++k)
      bits |= static_cast<uint64_t>(static_cast<uint8_t>(p[k])) << (8 * k);
    switch (t.dtype()) {
    case cpu::DType::F64: std::memcpy(&t.data<double>()[i], &bits, 8); break;
    case cpu::DType::F32: { uint32_t b = static_cast<uint32_t>(bits); std::memcpy(&t.data<float>()[i], &b, 4); break; }
    case cpu::DType::BF16: t.data<float>()[i] = cpu::bf16BitsToFloat(static_cast<uint16_t>(bits)); break;
    case cpu::DType::F16: t.data<float>()[i] = cpu::f16BitsToFloat(static_cast<uint16_t>(bits)); break;
    case cpu::DType::I32: t.data<int64_t>()[i] = static_cast<int32_t>(static_cast<uint32_t>(bits)); break;
    case cpu::DType::I1: t.data<int64_t>()[i] = bits != 0; break;
    case cpu::DType::I64: t.data<int64_t>()[i] = static_cast<int64_t>(bits); break;
    }
  }
}

} // namespace

llvm::Error writeSafetensors(llvm::StringRef path, const NamedTensors &tensors,
                             const std::map<std::string, std::string> &metadata) {
  llvm::json::Object header;
  size_t offset = 0;
  for (const auto &[name, t] : tensors) {
    size_t bytes = static_cast<size_t>(t.numel()) * cpu::dtypeSize(t.dtype());
    llvm::json::Array shape;
    for (int64_t d : t.shape())
      shape.push_back(d);
    header[name] = llvm::json::Object{{"dtype", dtypeCode(t.dtype())},
                                      {"shape", std::move(shape)},
                                      {"data_offsets", llvm::json::Array{offset, offset + bytes}}};
    offset += bytes;
  }
  if (!metadata.empty()) {
    llvm::json::Object meta;
    for (const auto &[k, v] : metadata)
      meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::string json = llvm::formatv("{0}", llvm::json::Value(std::move(header))).str();
  json.append((8 - json.size() % 8) % 8, ' '); // align the data to 8 bytes
  std::string out;
  out.reserve(8 + json.size() + offset);
  uint64_t n = json.size();
  for (int k = 0; k < 8; ++k)
    out += static_cast<char>((n >> (8 * k)) & 0xFF);
  out += json;
  for (const auto &entry : tensors)
    appendBytes(out, entry.second);
  return writeFileAtomically(path, out);
}

llvm::Expected<NamedTensors> readSafetensors(llvm::StringRef path,
                                             std::map<std::string, std::string> *metadata) {
  auto buffer = llvm::MemoryBuffer::getFile(path, false, false);
  if (!buffer)
    return llvm::createStringError(buffer.getError(), "cannot read '" + path + "': " +
                                                          buffer.getError().message());
  llvm::StringRef data = (*buffer)->getBuffer();
  if (data.size() < 8)
    return error(path, "shorter than its 8-byte header length");
  uint64_t n = 0;
  for (int k = 0; k < 8; ++k)
    n |= static_cast<uint64_t>(static_cast<uint8_t>(data[k])) << (8 * k);
  if (n > data.size() - 8)
    return error(path, llvm::formatv("header of {0} bytes runs past the end of the file", n));
  auto json = llvm::json::parse(data.substr(8, n));
  if (!json)
    return error(path, "header is not JSON: " + llvm::toString(json.takeError()));
  const llvm::json::Object *header = json->getAsObject();
  if (!header)
    return error(path, "header is not a JSON object");
  llvm::StringRef body = data.substr(8 + n);
  NamedTensors tensors;
  // (DenseMap entries are read through getFirst/getSecond: LLVM 22's
  // structured bindings of them do not refer to the map's own key storage.)
  for (const auto &item : *header) {
    llvm::StringRef key = item.getFirst();
    const llvm::json::Value &value = item.getSecond();
    if (key == "__metadata__") {
      if (metadata)
        if (const llvm::json::Object *meta = value.getAsObject())
          for (const auto &m : *meta)
            if (auto s = m.getSecond().getAsString())
              (*metadata)[m.getFirst().str()] = s->str();
      continue;
    }
    const llvm::json::Object *entry = value.getAsObject();
    auto code = entry ? entry->getString("dtype") : std::nullopt;
    const llvm::json::Array *shape = entry ? entry->getArray("shape") : nullptr;
    const llvm::json::Array *offsets = entry ? entry->getArray("data_offsets") : nullptr;
    if (!code || !shape || !offsets || offsets->size() != 2)
      return error(path, "tensor '" + key.str() + "' lacks dtype, shape or data_offsets");
    auto dtype = dtypeFromCode(*code);
    if (!dtype)
      return error(path, "tensor '" + key.str() + "' has unsupported dtype " + code->str());
    std::vector<int64_t> dims;
    for (const llvm::json::Value &d : *shape) {
      auto v = d.getAsInteger();
      if (!v || *v < 0)
        return error(path, "tensor '" + key.str() + "' has a malformed shape");
      dims.push_back(*v);
    }
    auto begin = (*offsets)[0].getAsInteger(), end = (*offsets)[1].getAsInteger();
    cpu::HostTensor t(*dtype, dims);
    int64_t expected = t.numel() * static_cast<int64_t>(cpu::dtypeSize(*dtype));
    if (!begin || !end || *begin < 0 || *end - *begin != expected ||
        *end > static_cast<int64_t>(body.size()))
      return error(path, llvm::formatv("tensor '{0}': data_offsets do not hold its {1} bytes "
                                       "inside the file",
                                       key.str(), expected));
    readBytes(t, body.data() + *begin);
    tensors.push_back({key.str(), std::move(t)});
  }
  // The JSON object does not keep key order: return the tensors by name.
  std::sort(tensors.begin(), tensors.end(),
            [](const auto &a, const auto &b) { return a.first < b.first; });
  return tensors;
}

} // namespace kiln
