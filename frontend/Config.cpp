//===- Config.cpp - the schema of RunConfig and its TOML binding -----------===//

#include "frontend/Config.h"

#include "support/Files.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/MemoryBuffer.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <limits>
#include <variant>

namespace kiln {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// One option: its dotted key, where it lives, its range or choices.
struct Field {
  std::string key;
  std::variant<int64_t *, double *, bool *, std::string *> target;
  double min = -kInf, max = kInf;
  std::vector<std::string> choices = {};

  Field(std::string key, int64_t *t, double lo, double hi) : key(std::move(key)), target(t), min(lo), max(hi) {}
  Field(std::string key, double *t, double lo, double hi) : key(std::move(key)), target(t), min(lo), max(hi) {}
  Field(std::string key, bool *t) : key(std::move(key)), target(t) {}
  Field(std::string key, std::string *t, double = 0, double = 0, std::vector<std::string> choices = {})
      : key(std::move(key)), target(t), choices(std::move(choices)) {}
};

/// The schema, bound to one RunConfig. Keys are listed in the order
/// toToml() prints them.
std::vector<Field> schema(RunConfig &c) {
  return {
      {"model.kind", &c.model.kind, 0, 0, {"gpt2"}},
      {"model.n_layer", &c.model.n_layer, 1, 1024},
      {"model.n_head", &c.model.n_head, 1, 1024},
      {"model.n_embd", &c.model.n_embd, 1, 1 << 16},
      {"model.vocab_size", &c.model.vocab_size, 1, 1 << 24},
      {"model.vocab_multiple", &c.model.vocab_multiple, 1, 4096},
      {"model.block_size", &c.model.block_size, 1, 1 << 20},
      {"model.layer_norm_eps", &c.model.layer_norm_eps, 0, 1},
      {"model.init_std", &c.model.init_std, 0, 10},
      {"model.init_from", &c.model.init_from},
      {"model.init_partial", &c.model.init_partial},
      {"train.steps", &c.train.steps, 1, 1e12},
      {"train.batch_size", &c.train.batch_size, 1, 1 << 20},
      {"train.seq_len", &c.train.seq_len, 0, 1 << 20},
      {"train.accumulate_steps", &c.train.accumulate_steps, 1, 1 << 16},
      {"train.seed", &c.train.seed, 0, 9.0e15},
      {"train.precision", &c.train.precision, 0, 0, {"f32", "bf16-mixed", "f16-mixed"}},
      {"train.loss_scale", &c.train.loss_scale, 1, 1e30},
      {"train.loss_scale_growth_interval", &c.train.loss_scale_growth_interval, 1, 1e12},
      {"train.loss_scale_growth", &c.train.loss_scale_growth, 1, 1e6},
      {"train.loss_scale_backoff", &c.train.loss_scale_backoff, 1e-6, 1},
      {"train.log_every", &c.train.log_every, 1, 1e9},
      {"train.device", &c.train.device, 0, 0, {"auto", "cpu", "cuda"}},
      {"optim.lr", &c.optim.lr, 0, 10},
      {"optim.min_lr_ratio", &c.optim.min_lr_ratio, 0, 1},
      {"optim.warmup_steps", &c.optim.warmup_steps, 0, 1e12},
      {"optim.schedule", &c.optim.schedule, 0, 0, {"cosine", "linear", "constant", "wsd"}},
      {"optim.decay_fraction", &c.optim.decay_fraction, 0, 1},
      {"optim.beta1", &c.optim.beta1, 0, 0.999999},
      {"optim.beta2", &c.optim.beta2, 0, 0.999999},
      {"optim.eps", &c.optim.eps, 1e-30, 1},
      {"optim.weight_decay", &c.optim.weight_decay, 0, 10},
      {"optim.decay_embeddings", &c.optim.decay_embeddings},
      {"optim.grad_clip", &c.optim.grad_clip, 0, 1e9},
      {"data.tokenizer", &c.data.tokenizer, 0, 0, {"byte", "gpt2"}},
      {"data.bpe_dir", &c.data.bpe_dir},
      {"data.train", &c.data.train},
      {"data.val", &c.data.val},
      {"data.mode", &c.data.mode, 0, 0, {"sequential", "random"}},
      {"eval.every", &c.eval.every, 0, 1e12},
      {"eval.batches", &c.eval.batches, 1, 1e9},
      {"eval.sample_tokens", &c.eval.sample_tokens, 0, 1e9},
      {"eval.prompt", &c.eval.prompt},
      {"eval.temperature", &c.eval.temperature, 0, 100},
      {"eval.top_k", &c.eval.top_k, 0, 1e9},
      {"checkpoint.every", &c.checkpoint.every, 0, 1e12},
      {"checkpoint.keep", &c.checkpoint.keep, 0, 1e6},
      {"compile.fuse_attention", &c.compile.fuse_attention, 0, 0, {"auto", "always", "never"}},
      {"run.dir", &c.run_dir},
  };
}

llvm::Error error(llvm::StringRef source, const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 source.str() + ": " + message.str());
}

std::string describeNode(const toml::node &node) {
  switch (node.type()) {
  case toml::node_type::string: return "string \"" + std::string(*node.value<std::string>()) + "\"";
  case toml::node_type::integer: return "integer " + std::to_string(*node.value<int64_t>());
  case toml::node_type::floating_point: return fmt::format("float {}", *node.value<double>());
  case toml::node_type::boolean: return *node.value<bool>() ? "true" : "false";
  case toml::node_type::array: return "an array";
  case toml::node_type::table: return "a table";
  default: return "a date/time";
  }
}

/// Sets `field` from a TOML value, checking its type and range.
llvm::Error assign(const Field &field, const toml::node &node, llvm::StringRef source) {
  auto got = [&] { return describeNode(node); };
  return std::visit(
      [&](auto *target) -> llvm::Error {
        using T = std::remove_pointer_t<decltype(target)>;
        if constexpr (std::is_same_v<T, int64_t>) {
          if (!node.is_integer())
            return error(source, field.key + " must be an integer, got " + got());
          int64_t v = *node.value<int64_t>();
          if (static_cast<double>(v) < field.min || static_cast<double>(v) > field.max)
            return error(source, fmt::format("{} = {} is out of range (must be in [{}, {}])",
                                             field.key, v, field.min, field.max));
          *target = v;
        } else if constexpr (std::is_same_v<T, double>) {
          if (!node.is_number())
            return error(source, field.key + " must be a number, got " + got());
          double v = *node.value<double>();
          if (!(v >= field.min && v <= field.max))
            return error(source, fmt::format("{} = {} is out of range (must be in [{}, {}])",
                                             field.key, v, field.min, field.max));
          *target = v;
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!node.is_boolean())
            return error(source, field.key + " must be true or false, got " + got());
          *target = *node.value<bool>();
        } else {
          if (!node.is_string())
            return error(source, field.key + " must be a string, got " + got());
          std::string v(*node.value<std::string>());
          if (!field.choices.empty() && !llvm::is_contained(field.choices, v))
            return error(source, field.key + " = \"" + v + "\" is not one of: " +
                                     llvm::join(field.choices, ", "));
          *target = v;
        }
        return llvm::Error::success();
      },
      field.target);
}

/// The field named `key`, or an error suggesting the nearest key.
llvm::Expected<const Field *> findField(const std::vector<Field> &fields, llvm::StringRef key,
                                        llvm::StringRef source) {
  const Field *best = nullptr;
  unsigned bestDistance = ~0u;
  for (const Field &f : fields) {
    if (f.key == key)
      return &f;
    unsigned d = llvm::StringRef(f.key).edit_distance(key);
    if (d < bestDistance) {
      bestDistance = d;
      best = &f;
    }
  }
  std::string hint = best && bestDistance <= 3 ? " (did you mean '" + best->key + "'?)" : "";
  return error(source, "unknown key '" + key + "'" + hint);
}

/// Walks a TOML table, assigning every leaf to its field.
llvm::Error assignTable(std::vector<Field> &fields, const toml::table &table,
                        const std::string &prefix, llvm::StringRef source) {
  for (auto &&[k, node] : table) {
    std::string key = prefix + std::string(k.str());
    if (const toml::table *sub = node.as_table()) {
      if (llvm::Error err = assignTable(fields, *sub, key + ".", source))
        return err;
      continue;
    }
    auto field = findField(fields, key, source);
    if (!field)
      return field.takeError();
    std::string where = source.str();
    if (auto line = node.source().begin.line)
      where += ":" + std::to_string(line);
    if (llvm::Error err = assign(**field, node, where))
      return err;
  }
  return llvm::Error::success();
}

std::string formatValue(const Field &field) {
  return std::visit(
      [](auto *target) -> std::string {
        using T = std::remove_pointer_t<decltype(target)>;
        if constexpr (std::is_same_v<T, std::string>) {
          std::string s = "\"";
          for (char c : *target)
            s += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
          return s + "\"";
        } else if constexpr (std::is_same_v<T, bool>) {
          return *target ? "true" : "false";
        } else if constexpr (std::is_same_v<T, double>) {
          std::string s = fmt::format("{}", *target);
          if (s.find_first_of(".eE") == std::string::npos && s.find("inf") == std::string::npos)
            s += ".0"; // keep it a TOML float
          return s;
        } else {
          return std::to_string(*target);
        }
      },
      field.target);
}

} // namespace

llvm::Expected<RunConfig> RunConfig::parse(llvm::StringRef text, llvm::StringRef source) {
  // TOML allows no control characters but tab (and newlines); toml++ 3.3
  // asserts on some instead of reporting them (found by tests/fuzz), so
  // they are refused here first.
  int64_t line = 1, column = 1;
  for (unsigned char c : text) {
    if (c == '\n') {
      ++line;
      column = 1;
      continue;
    }
    if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
      return error(fmt::format("{}:{}:{}", std::string(source), line, column),
                   fmt::format("control character U+{:04X} is not allowed in TOML", c));
    ++column;
  }
  toml::parse_result parsed = toml::parse(std::string_view(text.data(), text.size()),
                                          std::string_view(source.data(), source.size()));
  if (!parsed) {
    const toml::parse_error &err = parsed.error();
    return error(fmt::format("{}:{}:{}", std::string(source), err.source().begin.line,
                             err.source().begin.column),
                 std::string(err.description()));
  }
  RunConfig config;
  std::vector<Field> fields = schema(config);
  if (llvm::Error err = assignTable(fields, parsed.table(), "", source))
    return std::move(err);
  return config;
}

llvm::Expected<RunConfig> RunConfig::loadFile(llvm::StringRef path) {
  auto buffer = readRegularFile(path, "config", /*isText=*/true);
  if (!buffer)
    return buffer.takeError();
  return parse((*buffer)->getBuffer(), path);
}

llvm::Error RunConfig::applyOverrides(llvm::ArrayRef<std::string> assignments) {
  std::vector<Field> fields = schema(*this);
  for (const std::string &assignment : assignments) {
    llvm::StringRef text(assignment);
    std::string source = "--set " + assignment;
    auto [key, value] = text.split('=');
    key = key.trim();
    value = value.trim();
    if (!text.contains('=') || key.empty())
      return error(source, "expected key=value");
    auto field = findField(fields, key, source);
    if (!field)
      return field.takeError();
    // The value as TOML; a bare word that is not valid TOML is a string.
    std::string snippet = "v = " + value.str();
    toml::parse_result parsed = toml::parse(snippet);
    if (!parsed || !parsed.table().get("v")) {
      toml::table table;
      table.insert("v", value.str());
      if (llvm::Error err = assign(**field, *table.get("v"), source))
        return err;
      continue;
    }
    if (llvm::Error err = assign(**field, *parsed.table().get("v"), source))
      return err;
  }
  return llvm::Error::success();
}

llvm::Error RunConfig::validate(llvm::StringRef source) const {
  if (model.n_embd % model.n_head != 0)
    return error(source, fmt::format("model.n_embd = {} is not divisible by model.n_head = {}",
                                     model.n_embd, model.n_head));
  if (seqLen() > model.block_size)
    return error(source, fmt::format("train.seq_len = {} exceeds model.block_size = {}",
                                     train.seq_len, model.block_size));
  if (data.tokenizer == "byte" && model.vocab_size < 257)
    return error(source, fmt::format("model.vocab_size = {} is too small for the byte tokenizer "
                                     "(257 tokens: 256 bytes and end-of-text)",
                                     model.vocab_size));
  if (optim.warmup_steps >= train.steps && optim.schedule != "constant")
    return error(source, fmt::format("optim.warmup_steps = {} leaves no step of train.steps = {} "
                                     "for the {} schedule",
                                     optim.warmup_steps, train.steps, optim.schedule));
  return llvm::Error::success();
}

std::string RunConfig::toToml() const {
  RunConfig copy = *this;
  std::string out, section;
  for (const Field &field : schema(copy)) {
    llvm::StringRef key(field.key);
    auto [sec, name] = key.rsplit('.');
    if (sec != section) {
      section = sec.str();
      out += (out.empty() ? "[" : "\n[") + section + "]\n";
    }
    out += name.str() + " = " + formatValue(field) + "\n";
  }
  return out;
}

} // namespace kiln
