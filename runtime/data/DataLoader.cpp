//===- DataLoader.cpp - batches of (tokens, targets) from token shards -----===//

#include "runtime/data/DataLoader.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>

namespace kiln {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

} // namespace

llvm::json::Value LoaderPosition::toJSON() const {
  llvm::json::Array state;
  for (uint64_t w : rng)
    state.push_back(std::to_string(w)); // as strings: JSON numbers are doubles
  return llvm::json::Object{{"epoch", epoch}, {"shard", shard}, {"offset", offset},
                            {"rng", std::move(state)}};
}

llvm::Expected<LoaderPosition> LoaderPosition::fromJSON(const llvm::json::Value &value) {
  const llvm::json::Object *o = value.getAsObject();
  LoaderPosition p;
  auto epoch = o ? o->getInteger("epoch") : std::nullopt;
  auto shard = o ? o->getInteger("shard") : std::nullopt;
  auto offset = o ? o->getInteger("offset") : std::nullopt;
  const llvm::json::Array *rng = o ? o->getArray("rng") : nullptr;
  if (!epoch || !shard || !offset || !rng || rng->size() != 4)
    return error("malformed data position (expected epoch, shard, offset and a 4-word rng)");
  p.epoch = *epoch;
  p.shard = *shard;
  p.offset = *offset;
  for (size_t i = 0; i < 4; ++i) {
    auto word = (*rng)[i].getAsString();
    if (!word || llvm::StringRef(*word).getAsInteger(10, p.rng[i]))
      return error("malformed data position: rng word " + std::to_string(i));
  }
  return p;
}

namespace {
llvm::Error checkRows(int64_t first, int64_t count, int64_t batch) {
  if (first < 0 || count < 0 || first + count > batch || (count == 0 && first != 0))
    return error(llvm::formatv("rows [{0}, {0} + {1}) are not rows of a batch of {2}", first,
                               count, batch));
  return llvm::Error::success();
}
} // namespace

llvm::Error DataLoader::keepRows(int64_t first, int64_t count) {
  if (llvm::Error err = checkRows(first, count, options_.batch))
    return err;
  options_.rowBegin = first;
  options_.rowCount = count;
  return llvm::Error::success();
}

llvm::Expected<std::unique_ptr<DataLoader>> DataLoader::open(const LoaderOptions &options) {
  if (options.files.empty())
    return error("no token shards given");
  if (llvm::Error err = checkRows(options.rowBegin, options.rowCount, options.batch))
    return std::move(err);
  std::unique_ptr<DataLoader> loader(new DataLoader(options));
  for (const std::string &path : options.files) {
    auto shard = TokenShard::open(path, options.vocabSize);
    if (!shard)
      return shard.takeError();
    loader->total_ += shard->size();
    std::optional<TokenShard> mask;
    llvm::StringRef stem(path);
    if (stem.consume_back(".bin") && llvm::sys::fs::exists(stem + ".mask")) {
      auto m = TokenShard::open((stem + ".mask").str(), 2);
      if (!m)
        return m.takeError();
      if (m->size() != shard->size())
        return error(llvm::formatv("loss mask '{0}.mask' has {1} flags for the {2} tokens of "
                                   "'{3}'",
                                   stem, m->size(), shard->size(), path));
      mask = std::move(*m);
    }
    loader->masks_.push_back(std::move(mask));
    loader->shards_.push_back(std::move(*shard));
  }
  // Shards of rows: one row length across them, matching the sequence.
  const TokenShard &first = loader->shards_.front();
  for (const TokenShard &s : loader->shards_)
    if (s.rowTokens() != first.rowTokens())
      return error(llvm::formatv("'{0}' and '{1}' do not mix: {2}", first.path(), s.path(),
                                 first.rowTokens() && s.rowTokens()
                                     ? llvm::formatv("rows of {0} and of {1} tokens",
                                                     first.rowTokens(), s.rowTokens())
                                           .str()
                                     : std::string("one holds rows (kiln tokenize --format dpo), "
                                                   "the other a stream of documents")));
  if (first.rowTokens() > 0) {
    loader->rowTokens_ = first.rowTokens();
    if (loader->rowTokens_ != options.seqLen + 1)
      return error(llvm::formatv("'{0}' holds rows of {1} tokens, sequences of {2}; the run's "
                                 "sequence length is {3} (tokenize with --seq-len {3}, or set "
                                 "train.seq_len = {2})",
                                 first.path(), loader->rowTokens_, loader->rowTokens_ - 1,
                                 options.seqLen));
    if (options.batch % options.groupRows != 0)
      return error(llvm::formatv("a batch of {0} rows does not hold whole groups of {1}",
                                 options.batch, options.groupRows));
    for (const TokenShard &s : loader->shards_) {
      int64_t rows = s.size() / loader->rowTokens_;
      if (rows % options.groupRows != 0)
        return error(llvm::formatv("'{0}' holds {1} rows, not whole groups of {2}", s.path(),
                                   rows, options.groupRows));
      loader->firstRow_.push_back(loader->rowCount_);
      loader->rowCount_ += rows;
    }
    if (loader->rowCount_ < options.batch)
      return error(llvm::formatv("the shards ({0}, ...) hold {1} rows; a step needs {2}",
                                 options.files.front(), loader->rowCount_, options.batch));
    loader->reset();
    return std::move(loader);
  }
  int64_t window = options.random ? options.seqLen + 1 : options.batch * options.seqLen + 1;
  bool fits = false;
  for (const TokenShard &s : loader->shards_)
    fits |= s.size() >= window;
  if (!fits)
    return error(llvm::formatv("the token shards ({0}, ...) are too short: a {1} needs {2} "
                               "tokens in one shard; the largest has fewer",
                               options.files.front(), options.random ? "sequence" : "step", window));
  loader->reset();
  return std::move(loader);
}

void DataLoader::reset() {
  pos_ = LoaderPosition();
  // The stream's name is kept from when loaders had ranks, so runs keep
  // their batches.
  rng_ = Rng(options_.seed, "data.rank0");
  pos_.rng = rng_.state();
}

LoaderPosition DataLoader::position() const {
  LoaderPosition p = pos_;
  p.rng = rng_.state();
  return p;
}

llvm::Error DataLoader::seek(const LoaderPosition &position) {
  bool exists = rowTokens_ > 0
                    ? position.shard == 0 && position.offset >= 0 &&
                          position.offset < rowCount_ / options_.groupRows
                    : position.shard >= 0 && position.shard < static_cast<int64_t>(shards_.size()) &&
                          position.offset >= 0 && position.offset <= shards_[position.shard].size();
  if (!exists)
    return error(llvm::formatv("data position (shard {0}, offset {1}) does not exist in these "
                               "{2} shards",
                               position.shard, position.offset, shards_.size()));
  pos_ = position;
  rng_.setState(position.rng);
  return llvm::Error::success();
}

void documentIds(const cpu::HostTensor &tokens, int32_t eot, cpu::HostTensor &segments,
                 cpu::HostTensor &positions) {
  const int64_t B = tokens.dim(0), T = tokens.dim(1);
  segments = cpu::HostTensor(cpu::DType::I32, {B, T});
  positions = cpu::HostTensor(cpu::DType::I32, {B, T});
  for (int64_t b = 0; b < B; ++b) {
    int64_t segment = 0, start = 0;
    for (int64_t t = 0; t < T; ++t) {
      if (static_cast<int32_t>(tokens.get(b * T + t)) == eot && t > 0) {
        ++segment;
        start = t;
      }
      segments.set(b * T + t, static_cast<double>(segment));
      positions.set(b * T + t, static_cast<double>(t - start));
    }
  }
}

void DataLoader::readRows(llvm::ArrayRef<int64_t> rows, cpu::HostTensor &tokens,
                          cpu::HostTensor &targets) const {
  const int64_t B = static_cast<int64_t>(rows.size()), T = options_.seqLen;
  tokens = cpu::HostTensor(cpu::DType::I32, {B, T});
  targets = cpu::HostTensor(cpu::DType::I32, {B, T});
  int64_t *tok = tokens.data<int64_t>(), *tgt = targets.data<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    // The shard holding the row: the last one starting at or before it.
    int64_t shard = std::upper_bound(firstRow_.begin(), firstRow_.end(), rows[b]) -
                    firstRow_.begin() - 1;
    int64_t base = (rows[b] - firstRow_[shard]) * rowTokens_;
    for (int64_t t = 0; t < T; ++t) {
      tok[b * T + t] = token(shard, base + t);
      tgt[b * T + t] = target(shard, base + t + 1);
    }
  }
}

void DataLoader::next(cpu::HostTensor &tokens, cpu::HostTensor &targets,
                      std::vector<int64_t> *rowsOut) {
  const int64_t B = options_.batch, T = options_.seqLen;
  const int64_t first = options_.rowBegin, kept = keptRows();
  if (rowTokens_ > 0) {
    // Groups of rows: the step's groups in order (wrapping into the next
    // epoch), or random groups; then the rows kept.
    const int64_t G = options_.groupRows, groups = rowCount_ / G, perStep = B / G;
    std::vector<int64_t> rows;
    for (int64_t j = 0; j < perStep; ++j) {
      int64_t group = options_.random
                          ? static_cast<int64_t>(rng_.below(static_cast<uint64_t>(groups)))
                          : (pos_.offset + j) % groups;
      for (int64_t r = 0; r < G; ++r)
        rows.push_back(group * G + r);
    }
    if (!options_.random) {
      pos_.offset += perStep;
      pos_.epoch += pos_.offset / groups;
      pos_.offset %= groups;
    }
    rows = std::vector<int64_t>(rows.begin() + first, rows.begin() + first + kept);
    readRows(rows, tokens, targets);
    if (rowsOut)
      *rowsOut = std::move(rows);
    return;
  }
  tokens = cpu::HostTensor(cpu::DType::I32, {kept, T});
  targets = cpu::HostTensor(cpu::DType::I32, {kept, T});
  int64_t *tok = tokens.data<int64_t>(), *tgt = targets.data<int64_t>();
  if (options_.random) {
    // Uniform over every start position that leaves room for T+1 tokens;
    // every row is drawn, so the stream advances as for the whole batch.
    int64_t starts = 0;
    for (const TokenShard &s : shards_)
      starts += std::max<int64_t>(0, s.size() - T);
    for (int64_t b = 0; b < B; ++b) {
      int64_t pick = static_cast<int64_t>(rng_.below(starts)), shard = 0;
      if (b < first || b >= first + kept)
        continue;
      while (pick >= std::max<int64_t>(0, shards_[shard].size() - T)) {
        pick -= std::max<int64_t>(0, shards_[shard].size() - T);
        ++shard;
      }
      for (int64_t t = 0; t < T; ++t) {
        tok[(b - first) * T + t] = token(shard, pick + t);
        tgt[(b - first) * T + t] = target(shard, pick + t + 1);
      }
    }
    return;
  }
  // Sequential: the kept rows of the current window, then advance.
  const int64_t window = B * T;
  auto fits = [&](int64_t shard, int64_t offset) {
    return offset + window + 1 <= shards_[shard].size();
  };
  while (!fits(pos_.shard, pos_.offset)) {
    pos_.offset = 0;
    if (++pos_.shard == static_cast<int64_t>(shards_.size())) {
      pos_.shard = 0;
      ++pos_.epoch;
    }
  }
  int64_t base = pos_.offset + first * T;
  for (int64_t i = 0; i < kept * T; ++i) {
    tok[i] = token(pos_.shard, base + i);
    tgt[i] = target(pos_.shard, base + i + 1);
  }
  pos_.offset += window;
}

} // namespace kiln
