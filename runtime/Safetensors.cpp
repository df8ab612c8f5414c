//===- Safetensors.cpp - read and write the safetensors format -------------===//

#include "runtime/Safetensors.h"

#include "support/Files.h"


#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <algorithm>
#include <tuple>

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
  std::string data;
  data.reserve(offset);
  for (const auto &entry : tensors)
    appendBytes(data, entry.second);
  llvm::json::Object meta;
  for (const auto &[k, v] : metadata)
    meta[k] = v;
  meta[kChecksumKey.str()] = contentChecksum(data);
  header["__metadata__"] = std::move(meta);
  std::string json = llvm::formatv("{0}", llvm::json::Value(std::move(header))).str();
  json.append((8 - json.size() % 8) % 8, ' '); // align the data to 8 bytes
  std::string length;
  uint64_t n = json.size();
  for (int k = 0; k < 8; ++k)
    length += static_cast<char>((n >> (8 * k)) & 0xFF);
  return writeFileAtomically(path, {length, json, data});
}

namespace {

/// One tensor's header entry, checked against the file.
struct Entry {
  std::string name;
  cpu::DType dtype;
  std::vector<int64_t> shape;
  int64_t begin, end;
};

llvm::Expected<Entry> parseEntry(llvm::StringRef path, llvm::StringRef key,
                                 const llvm::json::Value &value, int64_t bodyBytes) {
  const llvm::json::Object *entry = value.getAsObject();
  auto code = entry ? entry->getString("dtype") : std::nullopt;
  const llvm::json::Array *shape = entry ? entry->getArray("shape") : nullptr;
  const llvm::json::Array *offsets = entry ? entry->getArray("data_offsets") : nullptr;
  if (!code || !shape || !offsets || offsets->size() != 2)
    return error(path, "tensor '" + key + "' lacks dtype, shape or data_offsets");
  auto dtype = dtypeFromCode(*code);
  if (!dtype)
    return error(path, "tensor '" + key + "' has unsupported dtype " + *code);
  Entry e{key.str(), *dtype, {}, 0, 0};
  for (const llvm::json::Value &d : *shape) {
    auto v = d.getAsInteger();
    if (!v || *v < 0)
      return error(path, "tensor '" + key + "' has a malformed shape");
    e.shape.push_back(*v);
  }
  auto bytes = cpu::checkedBytes(e.shape, static_cast<int64_t>(cpu::dtypeSize(*dtype)));
  auto begin = (*offsets)[0].getAsInteger(), end = (*offsets)[1].getAsInteger();
  if (!bytes || !begin || !end || *begin < 0 || *end < *begin || *end > bodyBytes ||
      *end - *begin != *bytes)
    return error(path, llvm::formatv("tensor '{0}' ({1}): data_offsets do not hold its {2} bytes "
                                     "inside the file's {3} bytes of data",
                                     key, cpu::typeString(*dtype, e.shape),
                                     bytes ? std::to_string(*bytes) : std::string("(overflowing)"),
                                     bodyBytes));
  e.begin = *begin;
  e.end = *end;
  return e;
}

} // namespace

llvm::Expected<NamedTensors> readSafetensors(llvm::StringRef path,
                                             std::map<std::string, std::string> *metadata) {
  auto buffer = readRegularFile(path, "safetensors file");
  if (!buffer)
    return buffer.takeError();
  return parseSafetensors((*buffer)->getBuffer(), path, metadata);
}

llvm::Expected<NamedTensors> parseSafetensors(llvm::StringRef data, llvm::StringRef path,
                                              std::map<std::string, std::string> *metadata) {
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

  // 1. Every entry checked against the file before anything is allocated.
  std::vector<Entry> entries;
  std::map<std::string, std::string> meta;
  // (DenseMap entries are read through getFirst/getSecond: LLVM 22's
  // structured bindings of them do not refer to the map's own key storage.)
  for (const auto &item : *header) {
    llvm::StringRef key = item.getFirst();
    const llvm::json::Value &value = item.getSecond();
    if (key == "__metadata__") {
      if (const llvm::json::Object *m = value.getAsObject())
        for (const auto &kv : *m)
          if (auto s = kv.getSecond().getAsString())
            meta[kv.getFirst().str()] = s->str();
      continue;
    }
    auto entry = parseEntry(path, key, value, static_cast<int64_t>(body.size()));
    if (!entry)
      return entry.takeError();
    entries.push_back(std::move(*entry));
  }
  // 2. The tensors tile the data without gaps or overlaps (the format's
  // rule), so no byte of the file goes unchecked.
  std::sort(entries.begin(), entries.end(),
            [](const Entry &a, const Entry &b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  int64_t covered = 0;
  for (const Entry &e : entries) {
    if (e.begin != covered)
      return error(path, llvm::formatv("tensor '{0}' starts at byte {1} of the data, but the "
                                       "tensors before it end at {2} (overlap or gap)",
                                       e.name, e.begin, covered));
    covered = e.end;
  }
  if (covered != static_cast<int64_t>(body.size()))
    return error(path, llvm::formatv("the tensors hold {0} bytes but the file has {1} bytes of "
                                     "data (truncated or padded)",
                                     covered, body.size()));
  // 3. kiln's own files carry a checksum of the data.
  if (auto it = meta.find(kChecksumKey.str()); it != meta.end() && it->second != contentChecksum(body))
    return error(path, "checksum mismatch: the tensor data was changed or corrupted after it was "
                       "written (" + kChecksumKey.str() + " " + it->second + ", data hashes to " +
                           contentChecksum(body) + ")");
  // 4. The tensors, by name (a JSON object does not keep key order).
  NamedTensors tensors;
  for (const Entry &e : entries) {
    auto t = cpu::HostTensor::create(e.dtype, e.shape, /*zero=*/false);
    if (!t)
      return error(path, "tensor '" + e.name + "': " + llvm::toString(t.takeError()));
    readBytes(*t, body.data() + e.begin);
    tensors.push_back({e.name, std::move(*t)});
  }
  std::sort(tensors.begin(), tensors.end(),
            [](const auto &a, const auto &b) { return a.first < b.first; });
  if (metadata)
    *metadata = std::move(meta);
  return tensors;
}

} // namespace kiln
