//===- Checkpoint.cpp - training checkpoints, written atomically -----------===//

#include "runtime/Checkpoint.h"

#include "support/Files.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cmath>

#include <unistd.h>

namespace kiln {

namespace fs = llvm::sys::fs;
namespace path = llvm::sys::path;

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

std::string join(llvm::StringRef a, llvm::StringRef b) {
  llvm::SmallString<256> p(a);
  path::append(p, b);
  return std::string(p);
}

llvm::json::Array rngToJSON(const std::array<uint64_t, 4> &rng) {
  llvm::json::Array a;
  for (uint64_t w : rng)
    a.push_back(std::to_string(w));
  return a;
}

bool rngFromJSON(const llvm::json::Array *a, std::array<uint64_t, 4> &rng) {
  if (!a || a->size() != 4)
    return false;
  for (size_t i = 0; i < 4; ++i) {
    auto w = (*a)[i].getAsString();
    if (!w || llvm::StringRef(*w).getAsInteger(10, rng[i]))
      return false;
  }
  return true;
}

/// The checkpoint's files other than state.json, which records their sizes
/// and checksums.
constexpr const char *kTensorFiles[] = {"model.safetensors", "optimizer.safetensors"};
/// 3: GPT-2's packed attention projection head-major (2: q|k|v-major, as
/// Hugging Face's; read, and converted by the caller, which knows the
/// model: Checkpoint::format).
constexpr int64_t kStateFormat = 3, kOldestStateFormat = 2;

/// state.json's text: the object with a "checksum" of its own canonical
/// serialization (llvm::json prints keys sorted and numbers exactly, so a
/// parsed copy serializes to the same text).
std::string canonical(const llvm::json::Object &o) {
  return llvm::formatv("{0}", llvm::json::Value(llvm::json::Object(o))).str();
}

llvm::Expected<std::string> stateToJSON(const TrainingState &s, llvm::StringRef dir) {
  llvm::json::Object files;
  for (const char *name : kTensorFiles) {
    auto bytes = readRegularFile(join(dir, name), "checkpoint file");
    if (!bytes)
      return bytes.takeError();
    files[name] = llvm::json::Object{{"bytes", static_cast<int64_t>((*bytes)->getBufferSize())},
                                     {"xxh3", contentChecksum((*bytes)->getBuffer())}};
  }
  llvm::json::Object o{{"format", kStateFormat},
                       {"step", s.step},
                       {"tokens_seen", s.tokensSeen},
                       {"data", s.data.toJSON()},
                       {"rng", rngToJSON(s.rng)},
                       {"loss_scale", s.lossScale},
                       {"good_steps", s.goodSteps},
                       {"tokenizer", llvm::json::Object{{"kind", s.tokenizer}, {"path", s.tokenizerPath}}},
                       {"config", s.config},
                       {"files", std::move(files)}};
  o["checksum"] = contentChecksum(canonical(o));
  return llvm::formatv("{0:2}", llvm::json::Value(std::move(o))).str() + "\n";
}

/// Reads and checks state.json: its own checksum, then every field's
/// presence and range. Returns the parsed object too (for the file list).
llvm::Expected<std::pair<TrainingState, llvm::json::Object>> stateFromJSON(llvm::StringRef file) {
  auto buffer = readRegularFile(file, "checkpoint state");
  if (!buffer)
    return buffer.takeError();
  auto json = llvm::json::parse((*buffer)->getBuffer());
  if (!json)
    return error("'" + file + "' is not valid JSON: " + llvm::toString(json.takeError()));
  llvm::json::Object *o = json->getAsObject();
  if (!o)
    return error("'" + file + "' is not a kiln training state (not a JSON object)");
  auto format = o->getInteger("format");
  if (!format || *format < kOldestStateFormat || *format > kStateFormat)
    return error(llvm::formatv("'{0}' has state format {1}; this kiln reads formats {2} to {3} "
                               "(checkpoints with checksums, kiln 0.1 of 2026-11-30 or later)",
                               file, format ? std::to_string(*format) : std::string("1 (none given)"),
                               kOldestStateFormat, kStateFormat));
  auto checksum = o->getString("checksum");
  if (!checksum)
    return error("'" + file + "' has no checksum");
  std::string stored = checksum->str();
  o->erase("checksum");
  if (contentChecksum(canonical(*o)) != stored)
    return error("'" + file + "': checksum mismatch: the file was changed or corrupted after it "
                 "was written");

  auto invalid = [&](const llvm::Twine &what) {
    return error("'" + file + "': " + what);
  };
  TrainingState s;
  auto step = o->getInteger("step");
  auto tokens = o->getInteger("tokens_seen");
  auto scale = o->getNumber("loss_scale");
  auto good = o->getInteger("good_steps");
  auto config = o->getString("config");
  const llvm::json::Object *tok = o->getObject("tokenizer");
  const llvm::json::Value *data = o->get("data");
  if (!step || !tokens || !scale || !good || !config || !tok || !data || !o->getObject("files") ||
      !rngFromJSON(o->getArray("rng"), s.rng))
    return invalid("missing fields of a kiln training state");
  if (*step < 0 || *tokens < 0 || *good < 0)
    return invalid(llvm::formatv("step ({0}), tokens_seen ({1}) and good_steps ({2}) must not be "
                                 "negative",
                                 *step, *tokens, *good));
  if (!std::isfinite(*scale) || *scale <= 0)
    return invalid(llvm::formatv("loss_scale must be a positive finite number, not {0}", *scale));
  auto position = LoaderPosition::fromJSON(*data);
  if (!position)
    return invalid(llvm::toString(position.takeError()));
  s.format = *format;
  s.step = *step;
  s.tokensSeen = *tokens;
  s.lossScale = *scale;
  s.goodSteps = *good;
  s.config = config->str();
  s.data = *position;
  s.tokenizer = tok->getString("kind").value_or("").str();
  // "bpe_dir": checkpoints written before the tiktoken and SentencePiece tokenizers.
  s.tokenizerPath =
      tok->getString("path").value_or(tok->getString("bpe_dir").value_or("")).str();
  if (!llvm::is_contained({"byte", "gpt2", "cl100k_base", "o200k_base", "sentencepiece"},
                          s.tokenizer))
    return invalid("unknown tokenizer kind '" + s.tokenizer + "'");
  return std::make_pair(std::move(s), std::move(*o));
}

/// Reads a tensor file, checked against the size and checksum state.json
/// recorded for it.
llvm::Expected<NamedTensors> readRecorded(llvm::StringRef dir, llvm::StringRef name,
                                          const llvm::json::Object &files) {
  const llvm::json::Object *f = files.getObject(name);
  auto bytes = f ? f->getInteger("bytes") : std::nullopt;
  auto sum = f ? f->getString("xxh3") : std::nullopt;
  std::string path = join(dir, name);
  if (!bytes || !sum)
    return error("'" + join(dir, "state.json") + "' does not record " + name);
  auto buffer = readRegularFile(path, "checkpoint file");
  if (!buffer)
    return buffer.takeError();
  if (static_cast<int64_t>((*buffer)->getBufferSize()) != *bytes)
    return error(llvm::formatv("'{0}' has {1} bytes but the checkpoint recorded {2}: the file was "
                               "truncated or replaced",
                               path, (*buffer)->getBufferSize(), *bytes));
  if (contentChecksum((*buffer)->getBuffer()) != *sum)
    return error("'" + path + "': checksum mismatch: the file was changed or corrupted after the "
                 "checkpoint was written");
  return parseSafetensors((*buffer)->getBuffer(), path);
}

/// The step of a checkpoint directory name "step_N", or nullopt.
std::optional<int64_t> stepOf(llvm::StringRef name) {
  int64_t step;
  if (!name.consume_front("step_") || name.getAsInteger(10, step) || step < 0)
    return std::nullopt;
  return step;
}

/// Checkpoint directories (step_N) under `dir`, by step, oldest first.
std::vector<std::string> listCheckpoints(llvm::StringRef dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    if (auto step = stepOf(path::filename(it->path())))
      found.push_back({*step, it->path()});
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto &entry : found)
    out.push_back(std::move(entry.second));
  return out;
}

} // namespace

llvm::Expected<std::string> saveCheckpoint(llvm::StringRef dir, const Checkpoint &checkpoint,
                                           int keep, const std::function<bool()> &beforeRename) {
  std::string name = llvm::formatv("step_{0:08}", checkpoint.state.step).str();
  std::string final = join(dir, name);
  if (std::error_code ec = fs::create_directories(dir))
    return error("cannot create checkpoint directory '" + dir + "': " + ec.message());
  // Leftovers of saves that died before their rename.
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    if (path::filename(it->path()).contains(".tmp-") || path::filename(it->path()).contains(".old-"))
      fs::remove_directories(it->path());

  // The prefix must be absolute: createUniqueDirectory puts relative ones in
  // the system's temporary directory, which may be another file system.
  llvm::SmallString<256> prefix(final + ".tmp"), tmp;
  fs::make_absolute(prefix);
  if (std::error_code e = fs::createUniqueDirectory(prefix, tmp))
    return error("cannot create a temporary checkpoint directory in '" + dir + "': " + e.message());
  std::string tmpDir(tmp);
  // createUniqueDirectory appends "-XXXXXX" to the prefix: ".tmp-XXXXXX".
  if (llvm::Error err = writeSafetensors(join(tmpDir, "model.safetensors"), checkpoint.params,
                                         {{kLayoutMetadataKey, kLayoutHeadMajor}}))
    return std::move(err);
  if (llvm::Error err = writeSafetensors(join(tmpDir, "optimizer.safetensors"), checkpoint.optimizer))
    return std::move(err);
  auto state = stateToJSON(checkpoint.state, tmpDir);
  if (!state)
    return state.takeError();
  if (llvm::Error err = writeFileAtomically(join(tmpDir, "state.json"), *state))
    return std::move(err);
  if (beforeRename && !beforeRename())
    return error("checkpoint save interrupted before its rename (left at '" + tmpDir + "')");
  // A checkpoint of this step from an earlier attempt (a resume from an
  // older checkpoint) is replaced: moved aside, then removed once the new
  // one is in place.
  std::string old;
  if (fs::exists(final)) {
    old = final + ".old-" + std::to_string(::getpid());
    if (std::error_code e = fs::rename(final, old))
      return error("cannot replace the checkpoint '" + final + "': " + e.message());
  }
  if (std::error_code e = fs::rename(tmpDir, final))
    return error("cannot move checkpoint into place at '" + final + "': " + e.message());
  if (llvm::Error err = writeFileAtomically(join(dir, "latest"), name + "\n"))
    return std::move(err);
  if (!old.empty())
    fs::remove_directories(old);
  // Keep the newest `keep` by step; never the one just written.
  if (keep > 0) {
    std::vector<std::string> all = listCheckpoints(dir);
    int64_t excess = static_cast<int64_t>(all.size()) - keep;
    for (const std::string &c : all) {
      if (excess <= 0)
        break;
      if (c == final)
        continue;
      fs::remove_directories(c);
      --excess;
    }
  }
  return final;
}

llvm::Expected<std::string> resolveCheckpoint(llvm::StringRef p) {
  if (fs::exists(join(p, "state.json")))
    return p.str();
  for (std::string dir : {p.str(), join(p, "checkpoints")}) {
    auto latest = llvm::MemoryBuffer::getFile(join(dir, "latest"));
    if (latest && stepOf((*latest)->getBuffer().trim())) {
      std::string candidate = join(dir, (*latest)->getBuffer().trim());
      if (fs::exists(join(candidate, "state.json")))
        return candidate;
    }
    // No usable pointer: the newest complete checkpoint.
    std::vector<std::string> all = listCheckpoints(dir);
    for (auto it = all.rbegin(); it != all.rend(); ++it)
      if (fs::exists(join(*it, "state.json")))
        return *it;
  }
  return error("no checkpoint in '" + p + "' (expected a checkpoint directory with state.json, "
               "or a run directory with checkpoints/)");
}

llvm::Expected<Checkpoint> loadCheckpoint(llvm::StringRef p) {
  auto dir = resolveCheckpoint(p);
  if (!dir)
    return dir.takeError();
  auto state = stateFromJSON(join(*dir, "state.json"));
  if (!state)
    return state.takeError();
  const llvm::json::Object &files = *state->second.getObject("files");
  Checkpoint c;
  auto params = readRecorded(*dir, "model.safetensors", files);
  if (!params)
    return params.takeError();
  auto optimizer = readRecorded(*dir, "optimizer.safetensors", files);
  if (!optimizer)
    return optimizer.takeError();
  c.params = std::move(*params);
  c.optimizer = std::move(*optimizer);
  c.state = std::move(state->first);
  c.path = *dir;
  return c;
}

} // namespace kiln
