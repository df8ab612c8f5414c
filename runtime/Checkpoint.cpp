//===- Checkpoint.cpp - training checkpoints, written atomically -----------===//

#include "runtime/Checkpoint.h"

#include "runtime/AtomicFile.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <algorithm>

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

std::string stateToJSON(const TrainingState &s) {
  llvm::json::Object o{{"step", s.step},
                       {"tokens_seen", s.tokensSeen},
                       {"data", s.data.toJSON()},
                       {"rng", rngToJSON(s.rng)},
                       {"loss_scale", s.lossScale},
                       {"good_steps", s.goodSteps},
                       {"tokenizer", llvm::json::Object{{"kind", s.tokenizer}, {"bpe_dir", s.bpeDir}}},
                       {"config", s.config}};
  return llvm::formatv("{0:2}", llvm::json::Value(std::move(o))).str() + "\n";
}

llvm::Expected<TrainingState> stateFromJSON(llvm::StringRef file) {
  auto buffer = llvm::MemoryBuffer::getFile(file);
  if (!buffer)
    return error("cannot read '" + file + "': " + buffer.getError().message());
  auto json = llvm::json::parse((*buffer)->getBuffer());
  if (!json)
    return error("'" + file + "' is not valid JSON: " + llvm::toString(json.takeError()));
  const llvm::json::Object *o = json->getAsObject();
  TrainingState s;
  auto step = o ? o->getInteger("step") : std::nullopt;
  auto tokens = o ? o->getInteger("tokens_seen") : std::nullopt;
  auto scale = o ? o->getNumber("loss_scale") : std::nullopt;
  auto good = o ? o->getInteger("good_steps") : std::nullopt;
  auto config = o ? o->getString("config") : std::nullopt;
  const llvm::json::Object *tok = o ? o->getObject("tokenizer") : nullptr;
  const llvm::json::Value *data = o ? o->get("data") : nullptr;
  if (!step || !tokens || !scale || !good || !config || !tok || !data ||
      !rngFromJSON(o->getArray("rng"), s.rng))
    return error("'" + file + "' is missing fields of a kiln training state");
  auto position = LoaderPosition::fromJSON(*data);
  if (!position)
    return error("'" + file + "': " + llvm::toString(position.takeError()));
  s.step = *step;
  s.tokensSeen = *tokens;
  s.lossScale = *scale;
  s.goodSteps = *good;
  s.config = config->str();
  s.data = *position;
  s.tokenizer = tok->getString("kind").value_or("").str();
  s.bpeDir = tok->getString("bpe_dir").value_or("").str();
  return s;
}

/// Checkpoint directories (step_*) under `dir`, oldest first.
std::vector<std::string> listCheckpoints(llvm::StringRef dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec)) {
    llvm::StringRef name = path::filename(it->path());
    if (name.starts_with("step_") && !name.contains(".tmp"))
      out.push_back(it->path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

} // namespace

llvm::Expected<std::string> saveCheckpoint(llvm::StringRef dir, const Checkpoint &checkpoint,
                                           int keep, const std::function<bool()> &beforeRename) {
  std::string name = llvm::formatv("step_{0:08}", checkpoint.state.step).str();
  std::string final = join(dir, name);
  if (fs::exists(final))
    return final; // this step is saved already
  if (std::error_code ec = fs::create_directories(dir))
    return error("cannot create checkpoint directory '" + dir + "': " + ec.message());
  // Leftovers of saves that died before their rename.
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    if (path::filename(it->path()).contains(".tmp-"))
      fs::remove_directories(it->path());

  // The prefix must be absolute: createUniqueDirectory puts relative ones in
  // the system's temporary directory, which may be another file system.
  llvm::SmallString<256> prefix(final + ".tmp"), tmp;
  fs::make_absolute(prefix);
  if (std::error_code e = fs::createUniqueDirectory(prefix, tmp))
    return error("cannot create a temporary checkpoint directory in '" + dir + "': " + e.message());
  std::string tmpDir(tmp);
  // createUniqueDirectory appends "-XXXXXX" to the prefix: ".tmp-XXXXXX".
  if (llvm::Error err = writeSafetensors(join(tmpDir, "model.safetensors"), checkpoint.params))
    return std::move(err);
  if (llvm::Error err = writeSafetensors(join(tmpDir, "optimizer.safetensors"), checkpoint.optimizer))
    return std::move(err);
  if (llvm::Error err = writeFileAtomically(join(tmpDir, "state.json"), stateToJSON(checkpoint.state)))
    return std::move(err);
  if (beforeRename && !beforeRename())
    return error("checkpoint save interrupted before its rename (left at '" + tmpDir + "')");
  if (std::error_code e = fs::rename(tmpDir, final))
    return error("cannot move checkpoint into place at '" + final + "': " + e.message());
  if (llvm::Error err = writeFileAtomically(join(dir, "latest"), name + "\n"))
    return std::move(err);
  if (keep > 0) {
    std::vector<std::string> all = listCheckpoints(dir);
    for (size_t i = 0; i + keep < all.size(); ++i)
      fs::remove_directories(all[i]);
  }
  return final;
}

llvm::Expected<std::string> resolveCheckpoint(llvm::StringRef p) {
  if (fs::exists(join(p, "state.json")))
    return p.str();
  for (std::string dir : {p.str(), join(p, "checkpoints")}) {
    auto latest = llvm::MemoryBuffer::getFile(join(dir, "latest"));
    if (latest) {
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
  Checkpoint c;
  auto params = readSafetensors(join(*dir, "model.safetensors"));
  if (!params)
    return params.takeError();
  auto optimizer = readSafetensors(join(*dir, "optimizer.safetensors"));
  if (!optimizer)
    return optimizer.takeError();
  auto state = stateFromJSON(join(*dir, "state.json"));
  if (!state)
    return state.takeError();
  c.params = std::move(*params);
  c.optimizer = std::move(*optimizer);
  c.state = std::move(*state);
  return c;
}

} // namespace kiln
