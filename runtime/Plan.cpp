//===- Plan.cpp - the Plan as JSON plus .cu files --------------------------===//

#include "runtime/Plan.h"

#include "ir/KilnAttrs.h"

#include "support/Files.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <map>
#include <set>

namespace kiln {

namespace json = llvm::json;

static constexpr std::pair<GemmEpilogue, llvm::StringLiteral> kEpilogueNames[] = {
    {GemmEpilogue::None, "none"},
    {GemmEpilogue::Gelu, "gelu"},
    {GemmEpilogue::GeluAux, "gelu_aux"},
    {GemmEpilogue::GeluGrad, "dgelu"},
    {GemmEpilogue::GeluGradBgrad, "dgelu_bgrad"},
    {GemmEpilogue::BgradA, "bgrada"},
};

llvm::StringRef gemmEpilogueName(GemmEpilogue e) {
  for (auto [value, name] : kEpilogueNames)
    if (value == e)
      return name;
  return "none";
}

std::optional<GemmEpilogue> gemmEpilogueNamed(llvm::StringRef name) {
  for (auto [value, n] : kEpilogueNames)
    if (n == name)
      return value;
  return std::nullopt;
}


namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

const char *kindName(PlanBinding::Kind k) {
  switch (k) {
  case PlanBinding::Kind::Param: return "param";
  case PlanBinding::Kind::State: return "state";
  case PlanBinding::Kind::Input: return "input";
  case PlanBinding::Kind::Output: return "output";
  }
  return "?";
}

const char *stepName(PlanStep::Kind k) {
  switch (k) {
  case PlanStep::Kind::Launch: return "launch";
  case PlanStep::Kind::Gemm: return "gemm";
  case PlanStep::Kind::Memset: return "memset";
  case PlanStep::Kind::Copy: return "copy";
  case PlanStep::Kind::Collective: return "collective";
  }
  return "?";
}

json::Array array3(const std::array<int64_t, 3> &a) { return json::Array{a[0], a[1], a[2]}; }

json::Value bindingJSON(const PlanBinding &b) {
  json::Array shape;
  for (int64_t d : b.shape)
    shape.push_back(d);
  json::Object o{{"kind", kindName(b.kind)}, {"name", b.name}, {"offset", b.offset},
                 {"dtype", cpu::dtypeName(b.dtype)}, {"shape", std::move(shape)}};
  if (!b.aliases.empty())
    o["aliases"] = b.aliases;
  return o;
}

json::Value stepJSON(const PlanStep &s) {
  json::Object o{{"kind", stepName(s.kind)}, {"op", s.op}, {"op_index", s.opIndex}};
  switch (s.kind) {
  case PlanStep::Kind::Launch: {
    json::Array args;
    for (const PlanArg &a : s.args)
      args.push_back(json::Object{{a.kind == PlanArg::Kind::Pointer ? "ptr" : "int", a.value}});
    o["kernel"] = s.kernel;
    o["grid"] = array3(s.grid);
    o["block"] = array3(s.block);
    o["shared"] = s.sharedBytes;
    o["args"] = std::move(args);
    break;
  }
  case PlanStep::Kind::Gemm: {
    const GemmDesc &g = s.gemm;
    o["gemm"] = json::Object{{"trans_a", g.transA}, {"trans_b", g.transB}, {"m", g.m}, {"n", g.n},
                             {"k", g.k}, {"lda", g.lda}, {"ldb", g.ldb}, {"ldc", g.ldc},
                             {"batch", g.batch}, {"stride_a", g.strideA}, {"stride_b", g.strideB},
                             {"stride_c", g.strideC}, {"a", g.a}, {"b", g.b}, {"c", g.c},
                             {"bias", g.bias}, {"epilogue", gemmEpilogueName(g.epilogue)},
                             {"aux", g.aux}, {"in", cpu::dtypeName(g.inType)},
                             {"out", cpu::dtypeName(g.outType)}};
    break;
  }
  case PlanStep::Kind::Memset:
    o["dst"] = s.dst;
    o["bytes"] = s.bytes;
    break;
  case PlanStep::Kind::Copy:
    o["dst"] = s.dst;
    o["src"] = s.src;
    o["bytes"] = s.bytes;
    break;
  case PlanStep::Kind::Collective: {
    const CollectiveDesc &c = s.collective;
    json::Array shape, result;
    for (int64_t d : c.shape)
      shape.push_back(d);
    for (int64_t d : c.resultShape)
      result.push_back(d);
    o["dst"] = s.dst;
    o["src"] = s.src;
    o["collective"] = json::Object{{"kind", c.kind},
                                   {"axis", c.axis},
                                   {"dim", c.dim},
                                   {"concat_dim", c.concatDim},
                                   {"peer", c.peer},
                                   {"channel", c.channel},
                                   {"bucket", c.bucket},
                                   {"dtype", cpu::dtypeName(c.dtype)},
                                   {"shape", std::move(shape)},
                                   {"result_shape", std::move(result)}};
    break;
  }
  }
  if (!s.joins.empty()) {
    json::Array joins;
    for (int64_t j : s.joins)
      joins.push_back(j);
    o["joins"] = std::move(joins);
  }
  return o;
}

std::optional<cpu::DType> dtypeNamed(llvm::StringRef name) {
  for (auto d : {cpu::DType::F64, cpu::DType::F32, cpu::DType::BF16, cpu::DType::F16,
                 cpu::DType::I64, cpu::DType::I32, cpu::DType::I1})
    if (cpu::dtypeName(d) == name)
      return d;
  return std::nullopt;
}

} // namespace

llvm::Error validateEpilogue(const GemmDesc &g) {
  bool needsAux = g.epilogue == GemmEpilogue::GeluAux || g.epilogue == GemmEpilogue::GeluGrad ||
                  g.epilogue == GemmEpilogue::GeluGradBgrad;
  bool writesBias = g.epilogue == GemmEpilogue::GeluGradBgrad || g.epilogue == GemmEpilogue::BgradA;
  llvm::StringRef name = gemmEpilogueName(g.epilogue);
  if (needsAux != (g.aux >= 0))
    return error(llvm::formatv("the {0} epilogue {1} an aux matrix", name,
                               needsAux ? "needs" : "takes no"));
  if (writesBias && g.bias < 0)
    return error(llvm::formatv("the {0} epilogue needs a bias-gradient vector", name));
  if (g.epilogue != GemmEpilogue::None && (g.batch != 1 || g.m % 8 != 0))
    return error(llvm::formatv("the {0} epilogue needs one GEMM with m a multiple of 8 (batch {1}, "
                               "m {2})",
                               name, g.batch, g.m));
  return llvm::Error::success();
}

namespace {

/// Reads integer fields, remembering the first missing one.
struct Reader {
  std::string missing;
  int64_t i(const json::Object *o, llvm::StringRef key) {
    auto v = o ? o->getInteger(key) : std::nullopt;
    if (!v && missing.empty())
      missing = key.str();
    return v.value_or(0);
  }
  bool flag(const json::Object *o, llvm::StringRef key) {
    auto v = o ? o->getBoolean(key) : std::nullopt;
    if (!v && missing.empty())
      missing = key.str();
    return v.value_or(false);
  }
  std::string s(const json::Object *o, llvm::StringRef key) {
    auto v = o ? o->getString(key) : std::nullopt;
    if (!v && missing.empty())
      missing = key.str();
    return v ? v->str() : "";
  }
  cpu::DType dtype(const json::Object *o, llvm::StringRef key) {
    auto d = dtypeNamed(s(o, key));
    if (!d && missing.empty())
      missing = key.str();
    return d.value_or(cpu::DType::F32);
  }
  std::array<int64_t, 3> three(const json::Object *o, llvm::StringRef key) {
    const json::Array *a = o ? o->getArray(key) : nullptr;
    std::array<int64_t, 3> out{1, 1, 1};
    if (!a || a->size() != 3) {
      if (missing.empty())
        missing = key.str();
      return out;
    }
    for (int d = 0; d < 3; ++d)
      out[d] = (*a)[d].getAsInteger().value_or(1);
    return out;
  }
};

llvm::Expected<PlanBinding> bindingFrom(const json::Value &v, Reader &r) {
  const json::Object *o = v.getAsObject();
  PlanBinding b;
  std::string kind = r.s(o, "kind");
  if (kind == "param") b.kind = PlanBinding::Kind::Param;
  else if (kind == "state") b.kind = PlanBinding::Kind::State;
  else if (kind == "input") b.kind = PlanBinding::Kind::Input;
  else if (kind == "output") b.kind = PlanBinding::Kind::Output;
  else return error("plan: unknown binding kind '" + kind + "'");
  b.name = r.s(o, "name");
  b.offset = r.i(o, "offset");
  b.dtype = r.dtype(o, "dtype");
  if (const json::Array *shape = o ? o->getArray("shape") : nullptr)
    for (const json::Value &d : *shape)
      b.shape.push_back(d.getAsInteger().value_or(0));
  if (auto a = o ? o->getString("aliases") : std::nullopt)
    b.aliases = a->str();
  return b;
}

} // namespace

std::string PlanMemory::describe() const {
  auto mib = [](int64_t bytes) { return llvm::formatv("{0,10:f1} MiB", bytes / 1048576.0).str(); };
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::formatv("memory plan: one arena of {0:f2} GiB\n", total / 1073741824.0);
  os << "  parameters       " << mib(params) << "\n";
  os << "  optimizer states " << mib(states) << "\n";
  os << "  step inputs      " << mib(inputs) << "\n";
  os << "  workspace        " << mib(workspace) << "\n";
  os << "  temporaries      " << mib(scratch)
     << llvm::formatv("  (at the peak: gradients {0:f1} MiB, activations and other {1:f1} MiB)\n",
                      gradsAtPeak / 1048576.0, (peakLive - gradsAtPeak) / 1048576.0);
  return s;
}

const PlanFunction *Plan::function(llvm::StringRef name) const {
  for (const PlanFunction &f : functions)
    if (f.name == name)
      return &f;
  return nullptr;
}

json::Value Plan::toJSON() const {
  json::Array ks, fs, hs;
  for (const PlanKernel &k : kernels)
    ks.push_back(json::Object{{"name", k.name}, {"file", "kernels/" + k.name + ".cu"}});
  for (const auto &h : headers)
    hs.push_back(h.first);
  for (const PlanFunction &f : functions) {
    json::Array args, results, steps;
    for (const PlanBinding &b : f.args)
      args.push_back(bindingJSON(b));
    for (const PlanBinding &b : f.results)
      results.push_back(bindingJSON(b));
    for (const PlanStep &s : f.steps)
      steps.push_back(stepJSON(s));
    fs.push_back(json::Object{{"name", f.name}, {"args", std::move(args)},
                              {"results", std::move(results)}, {"steps", std::move(steps)}});
  }
  return json::Object{{"format", "kiln-plan-2"},
                      {"arch", arch},
                      {"sm_count", smCount},
                      {"memory", json::Object{{"params", memory.params},
                                              {"states", memory.states},
                                              {"inputs", memory.inputs},
                                              {"workspace", memory.workspace},
                                              {"workspace_offset", memory.workspaceOffset},
                                              {"grads_at_peak", memory.gradsAtPeak},
                                              {"scratch", memory.scratch},
                                              {"total", memory.total},
                                              {"gemm_workspace", memory.gemmWorkspace},
                                              {"peak_live", memory.peakLive},
                                              {"error_flag", memory.errorFlag},
                                              {"numerics_flag", memory.numericsFlag}}},
                      {"kernels", std::move(ks)},
                      {"headers", std::move(hs)},
                      {"notes", json::Array(notes)},
                      {"deterministic", deterministic},
                      {"functions", std::move(fs)}};
}

llvm::Expected<Plan> Plan::fromJSON(const json::Value &value) {
  const json::Object *o = value.getAsObject();
  if (!o || o->getString("format") != std::optional<llvm::StringRef>("kiln-plan-2"))
    return error("plan: not a kiln plan of this version (expected \"format\": \"kiln-plan-2\"; "
                 "compile the config again)");
  Reader r;
  Plan p;
  p.arch = r.s(o, "arch");
  p.smCount = static_cast<int>(r.i(o, "sm_count"));
  const json::Object *m = o->getObject("memory");
  p.memory = {r.i(m, "params"), r.i(m, "states"), r.i(m, "inputs"), r.i(m, "workspace"),
              r.i(m, "workspace_offset"), r.i(m, "grads_at_peak"), r.i(m, "scratch"),
              r.i(m, "total"), r.i(m, "gemm_workspace"), r.i(m, "peak_live"),
              r.i(m, "error_flag")};
  if (m)
    p.memory.numericsFlag = m->getInteger("numerics_flag").value_or(-1);
  if (const json::Array *ks = o->getArray("kernels"))
    for (const json::Value &k : *ks)
      p.kernels.push_back({r.s(k.getAsObject(), "name"), ""});
  if (const json::Array *hs = o->getArray("headers"))
    for (const json::Value &h : *hs)
      if (auto name = h.getAsString())
        p.headers.push_back({name->str(), ""});
  if (const json::Array *ns = o->getArray("notes"))
    for (const json::Value &n : *ns)
      if (auto text = n.getAsString())
        p.notes.push_back(text->str());
  p.deterministic = o->getBoolean("deterministic").value_or(false);
  const json::Array *fs = o->getArray("functions");
  if (!fs)
    return error("plan: no functions");
  for (const json::Value &fv : *fs) {
    const json::Object *fo = fv.getAsObject();
    PlanFunction f;
    f.name = r.s(fo, "name");
    for (llvm::StringRef list : {"args", "results"})
      if (const json::Array *bs = fo ? fo->getArray(list) : nullptr)
        for (const json::Value &bv : *bs) {
          auto b = bindingFrom(bv, r);
          if (!b)
            return b.takeError();
          (list == "args" ? f.args : f.results).push_back(*b);
        }
    if (const json::Array *ss = fo ? fo->getArray("steps") : nullptr)
      for (const json::Value &sv : *ss) {
        const json::Object *so = sv.getAsObject();
        PlanStep s;
        std::string kind = r.s(so, "kind");
        s.op = r.s(so, "op");
        s.opIndex = so ? so->getInteger("op_index").value_or(-1) : -1;
        if (kind == "launch") {
          s.kind = PlanStep::Kind::Launch;
          s.kernel = static_cast<int>(r.i(so, "kernel"));
          s.grid = r.three(so, "grid");
          s.block = r.three(so, "block");
          s.sharedBytes = r.i(so, "shared");
          if (const json::Array *args = so->getArray("args"))
            for (const json::Value &a : *args) {
              const json::Object *ao = a.getAsObject();
              if (auto ptr = ao ? ao->getInteger("ptr") : std::nullopt)
                s.args.push_back({PlanArg::Kind::Pointer, *ptr});
              else
                s.args.push_back({PlanArg::Kind::Int, r.i(ao, "int")});
            }
          if (s.kernel < 0 || s.kernel >= static_cast<int>(p.kernels.size()))
            return error(llvm::formatv("plan: step '{0}' launches kernel {1} of {2}", s.op, s.kernel,
                                       p.kernels.size()));
        } else if (kind == "gemm") {
          s.kind = PlanStep::Kind::Gemm;
          const json::Object *g = so->getObject("gemm");
          GemmDesc &d = s.gemm;
          d.transA = r.flag(g, "trans_a");
          d.transB = r.flag(g, "trans_b");
          d.m = r.i(g, "m"), d.n = r.i(g, "n"), d.k = r.i(g, "k");
          d.lda = r.i(g, "lda"), d.ldb = r.i(g, "ldb"), d.ldc = r.i(g, "ldc");
          d.batch = r.i(g, "batch"), d.strideA = r.i(g, "stride_a"), d.strideB = r.i(g, "stride_b");
          d.strideC = r.i(g, "stride_c"), d.a = r.i(g, "a"), d.b = r.i(g, "b"), d.c = r.i(g, "c");
          d.bias = r.i(g, "bias");
          std::string epilogue = r.s(g, "epilogue");
          if (auto e = gemmEpilogueNamed(epilogue))
            d.epilogue = *e;
          else if (r.missing.empty())
            return error("plan: step '" + s.op + "' has an unknown GEMM epilogue '" + epilogue + "'");
          d.aux = r.i(g, "aux");
          d.inType = r.dtype(g, "in");
          d.outType = r.dtype(g, "out");
        } else if (kind == "memset") {
          s.kind = PlanStep::Kind::Memset;
          s.dst = r.i(so, "dst");
          s.bytes = r.i(so, "bytes");
        } else if (kind == "copy") {
          s.kind = PlanStep::Kind::Copy;
          s.dst = r.i(so, "dst");
          s.src = r.i(so, "src");
          s.bytes = r.i(so, "bytes");
        } else if (kind == "collective") {
          s.kind = PlanStep::Kind::Collective;
          s.dst = r.i(so, "dst");
          s.src = r.i(so, "src");
          const json::Object *c = so ? so->getObject("collective") : nullptr;
          CollectiveDesc &d = s.collective;
          d.kind = r.s(c, "kind");
          d.axis = r.s(c, "axis");
          d.dim = r.i(c, "dim");
          d.concatDim = c && c->get("concat_dim") ? r.i(c, "concat_dim") : 0;
          d.peer = c && c->get("peer") ? r.i(c, "peer") : -1;
          d.channel = c && c->get("channel") ? r.i(c, "channel") : -1;
          d.bucket = c && c->get("bucket") ? r.i(c, "bucket") : -1;
          d.dtype = r.dtype(c, "dtype");
          for (auto [key, shape] : {std::pair{"shape", &d.shape}, {"result_shape", &d.resultShape}})
            if (const json::Array *a = c ? c->getArray(key) : nullptr)
              for (const json::Value &v : *a)
                shape->push_back(v.getAsInteger().value_or(-1));
        } else {
          return error("plan: unknown step kind '" + kind + "'");
        }
        if (const json::Array *joins = so->getArray("joins"))
          for (const json::Value &j : *joins)
            s.joins.push_back(j.getAsInteger().value_or(-1));
        f.steps.push_back(std::move(s));
      }
    p.functions.push_back(std::move(f));
  }
  if (!r.missing.empty())
    return error("plan: missing or malformed field '" + r.missing + "'");
  if (llvm::Error err = p.validate())
    return std::move(err);
  return p;
}

llvm::Error Plan::validate() const {
  const int64_t total = memory.total;
  if (total < 0 || total > (int64_t(1) << 50))
    return error(llvm::formatv("plan: arena of {0} bytes", total));
  // [offset, offset + bytes) inside the arena, without overflow.
  auto inside = [&](int64_t offset, int64_t bytes) {
    return offset >= 0 && bytes >= 0 && offset <= total && bytes <= total - offset;
  };
  for (int64_t word : {memory.errorFlag, memory.numericsFlag})
    if (word != -1 && !inside(word, 8))
      return error(llvm::formatv("plan: a flag word at {0} outside the {1}-byte arena", word, total));
  for (const PlanKernel &k : kernels)
    if (k.name.empty() || !llvm::all_of(k.name, [](char c) { return llvm::isAlnum(c) || c == '_'; }))
      return error("plan: kernel name '" + k.name + "' is not an identifier");
  for (const PlanFunction &f : functions) {
    for (const auto *list : {&f.args, &f.results})
      for (const PlanBinding &b : *list) {
        auto bytes = cpu::checkedBytes(b.shape, static_cast<int64_t>(cpu::dtypeSize(b.dtype)));
        if (!bytes || !inside(b.offset, *bytes))
          return error(llvm::formatv("plan: @{0} binds '{1}' outside the {2}-byte arena", f.name,
                                     b.name, total));
      }
    // A bucket is one run of steps whose groups share a mesh axis (sums
    // over "dp" and "dp,tp"; the executor posts a run as one NCCL group;
    // a bucket in two places would be two groups the pass did not make).
    auto axesOf = [](llvm::StringRef group) {
      auto parts = groupAxes(group);
      return std::set<std::string>(parts.begin(), parts.end());
    };
    // bucket -> (its last step, the axes every step so far spans)
    std::map<int64_t, std::pair<size_t, std::set<std::string>>> lastOfBucket;
    for (auto [i, s] : llvm::enumerate(f.steps)) {
      if (s.kind != PlanStep::Kind::Collective || s.collective.bucket < 0)
        continue;
      std::set<std::string> axes = axesOf(s.collective.axis);
      auto [at, fresh] = lastOfBucket.insert({s.collective.bucket, {i, axes}});
      std::set<std::string> &shared = at->second.second;
      if (!fresh)
        for (auto it = shared.begin(); it != shared.end();)
          it = axes.count(*it) ? std::next(it) : shared.erase(it);
      if (!fresh && (at->second.first + 1 != i || shared.empty()))
        return error(llvm::formatv("plan: @{0} step {1} ('{2}') is in bucket {3}, whose steps are "
                                   "not one run of sums sharing a mesh axis",
                                   f.name, i, s.op, s.collective.bucket));
      at->second.first = i;
    }
    for (auto [i, s] : llvm::enumerate(f.steps)) {
      for (int64_t j : s.joins)
        if (j < 0 || j >= static_cast<int64_t>(i) ||
            f.steps[static_cast<size_t>(j)].kind != PlanStep::Kind::Collective)
          return error(llvm::formatv("plan: @{0} step {1} ('{2}') waits for step {3}, which is not "
                                     "an earlier collective",
                                     f.name, i, s.op, j));
      bool ok = true;
      if (s.kind == PlanStep::Kind::Memset)
        ok = inside(s.dst, s.bytes);
      else if (s.kind == PlanStep::Kind::Copy)
        ok = inside(s.dst, s.bytes) && inside(s.src, s.bytes);
      else if (s.kind == PlanStep::Kind::Launch)
        ok = llvm::all_of(s.args, [&](const PlanArg &a) {
          return a.kind != PlanArg::Kind::Pointer || inside(a.value, 0);
        });
      else if (s.kind == PlanStep::Kind::Collective) {
        const CollectiveDesc &c = s.collective;
        auto in = cpu::checkedBytes(c.shape, static_cast<int64_t>(cpu::dtypeSize(c.dtype)));
        auto out = cpu::checkedBytes(c.resultShape, static_cast<int64_t>(cpu::dtypeSize(c.dtype)));
        const int64_t rank = static_cast<int64_t>(c.shape.size());
        if (!llvm::is_contained({"all_reduce", "all_gather", "reduce_scatter", "all_to_all",
                                 "take_shard", "send", "recv"},
                                c.kind) ||
            c.axis.empty() || c.dim < 0 || (c.isTransfer() && (c.peer < 0 || c.shape != c.resultShape)) ||
            (c.bucket >= 0 && c.kind != "all_reduce" && c.kind != "reduce_scatter") ||
            (c.kind == "all_to_all" &&
             (c.concatDim < 0 || c.concatDim >= rank || c.concatDim == c.dim ||
              static_cast<int64_t>(c.resultShape.size()) != rank || c.resultShape[c.dim] <= 0 ||
              c.shape[c.dim] % c.resultShape[c.dim] != 0 ||
              c.resultShape[c.concatDim] !=
                  c.shape[c.concatDim] * (c.shape[c.dim] / c.resultShape[c.dim]) ||
              cpu::product(c.shape) != cpu::product(c.resultShape))) ||
            (c.kind != "all_reduce" && !c.isTransfer() &&
             c.dim >= static_cast<int64_t>(c.shape.size())) ||
            (c.kind != "all_reduce" && c.shape.size() != c.resultShape.size()))
          return error(llvm::formatv("plan: @{0} step '{1}' is not a collective kiln runs ({2} "
                                     "over '{3}', dimension {4})",
                                     f.name, s.op, c.kind, c.axis, c.dim));
        ok = in && out && inside(s.src, *in) && inside(s.dst, *out);
      } else if (s.kind == PlanStep::Kind::Gemm)
        ok = inside(s.gemm.a, 0) && inside(s.gemm.b, 0) && inside(s.gemm.c, 0) &&
             (s.gemm.bias < 0 || inside(s.gemm.bias, 0)) &&
             (s.gemm.aux < 0 || inside(s.gemm.aux, 0));
      if (!ok)
        return error(llvm::formatv("plan: @{0} step '{1}' reaches outside the {2}-byte arena",
                                   f.name, s.op, total));
      if (s.kind == PlanStep::Kind::Gemm)
        if (llvm::Error err = validateEpilogue(s.gemm))
          return error(llvm::formatv("plan: @{0} step '{1}': {2}", f.name, s.op,
                                     llvm::toString(std::move(err))));
    }
  }
  return llvm::Error::success();
}

llvm::Error Plan::save(llvm::StringRef dir) const {
  for (const auto &[name, contents] : headers) {
    llvm::SmallString<256> path(dir);
    llvm::sys::path::append(path, "kernels", name);
    if (std::error_code ec = llvm::sys::fs::create_directories(llvm::sys::path::parent_path(path)))
      return error("cannot create '" + llvm::sys::path::parent_path(path) + "': " + ec.message());
    if (llvm::Error err = writeFileAtomically(path, contents))
      return err;
  }
  for (const PlanKernel &k : kernels) {
    llvm::SmallString<256> path(dir);
    llvm::sys::path::append(path, "kernels", k.name + ".cu");
    if (llvm::Error err = writeFileAtomically(path, k.source))
      return err;
  }
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, "plan.json");
  return writeFileAtomically(path, llvm::formatv("{0:2}", toJSON()).str() + "\n");
}

llvm::Expected<Plan> Plan::load(llvm::StringRef dir) {
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, "plan.json");
  auto file = readRegularFile(path, "plan");
  if (!file)
    return file.takeError();
  auto json = json::parse((*file)->getBuffer());
  if (!json)
    return error("'" + path + "' is not valid JSON: " + llvm::toString(json.takeError()));
  auto plan = fromJSON(*json);
  if (!plan)
    return error("'" + path + "': " + llvm::toString(plan.takeError()));
  for (PlanKernel &k : plan->kernels) {
    llvm::SmallString<256> cu(dir);
    llvm::sys::path::append(cu, "kernels", k.name + ".cu");
    auto source = readRegularFile(cu, "kernel source");
    if (!source)
      return source.takeError();
    k.source = (*source)->getBuffer().str();
  }
  for (auto &[name, contents] : plan->headers) {
    llvm::SmallString<256> h(dir);
    llvm::sys::path::append(h, "kernels", name);
    auto source = readRegularFile(h, "kernel header");
    if (!source)
      return source.takeError();
    contents = (*source)->getBuffer().str();
  }
  return plan;
}

} // namespace kiln
