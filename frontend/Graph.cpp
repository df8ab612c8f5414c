//===- Graph.cpp - the C++ builder API that emits kiln IR ------------------===//

#include "frontend/Graph.h"
#include "ir/KilnAttrs.h"

#include "ir/KilnBuilders.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;

namespace kiln::frontend {

namespace b = kiln::build;

RankedTensorType Tensor::type() const { return llvm::cast<RankedTensorType>(value_.getType()); }

//===----------------------------------------------------------------------===//
// Graph
//===----------------------------------------------------------------------===//

Graph::Graph(ModuleOp module, StringRef name) : builder_(module.getContext()) {
  MLIRContext *ctx = module.getContext();
  ctx->loadDialect<KilnDialect, func::FuncDialect>();
  floatType_ = builder_.getF32Type();
  builder_.setInsertionPointToEnd(module.getBody());
  func_ = func::FuncOp::create(builder_, NameLoc::get(builder_.getStringAttr(name)), name,
                               builder_.getFunctionType({}, {}));
  body_ = func_.addEntryBlock();
  builder_.setInsertionPointToEnd(body_);
}

std::string Graph::qualified(StringRef name) const {
  std::string s;
  for (const std::string &scope : scopes_)
    s += scope + ".";
  return s + name.str();
}

Location Graph::loc() {
  std::string name = scopes_.empty() ? func_.getSymName().str() : llvm::join(scopes_, ".");
  return NameLoc::get(builder_.getStringAttr(name));
}

void Graph::error(const Twine &message) {
  std::string where = scopes_.empty() ? "" : " (in " + llvm::join(scopes_, ".") + ")";
  errors_.push_back(message.str() + where);
}

BlockArgument Graph::addArgument(Type type, StringRef attr, StringRef name) {
  for (auto &[a, n] : argAttrs_)
    if (n == name)
      error("the name \"" + name + "\" is used by two arguments");
  argAttrs_.push_back({attr.str(), name.str()});
  argInits_.push_back("");
  argRoles_.push_back("");
  argShardings_.emplace_back();
  return body_->addArgument(type, NameLoc::get(builder_.getStringAttr(name)));
}

Tensor Graph::param(StringRef name, ArrayRef<int64_t> shape, ParamInit init, StringRef role,
                    Type elementType) {
  std::string full = qualified(name);
  Type elt = elementType ? elementType : floatType_;
  BlockArgument arg = addArgument(RankedTensorType::get(shape, elt), KilnDialect::kParamAttrName, full);
  argInits_.back() = init.str();
  argRoles_.back() = role.str();
  return Tensor(this, arg);
}

Tensor Graph::input(StringRef name, ArrayRef<int64_t> shape, Type elementType) {
  BlockArgument arg = addArgument(RankedTensorType::get(shape, elementType),
                                  KilnDialect::kInputAttrName, name);
  return Tensor(this, arg);
}

void Graph::shard(const Tensor &arg, ArrayRef<StringRef> axes) {
  std::vector<std::vector<std::string>> lists;
  for (StringRef a : axes)
    lists.push_back(a.empty() ? std::vector<std::string>() : std::vector<std::string>{a.str()});
  shard(arg, lists);
}

void Graph::shard(const Tensor &arg, ArrayRef<std::vector<std::string>> axes) {
  auto block = mlir::dyn_cast<BlockArgument>(arg.value());
  auto rank = mlir::cast<RankedTensorType>(arg.value().getType()).getRank();
  if (!block || block.getOwner() != body_) {
    error("shard: only a function argument can be annotated");
    return;
  }
  if (static_cast<int64_t>(axes.size()) != rank) {
    error("shard: " + std::to_string(axes.size()) + " axes for an argument of rank " +
          std::to_string(rank));
    return;
  }
  if (llvm::all_of(axes, [](const std::vector<std::string> &a) { return a.empty(); }))
    return; // whole: no annotation
  argShardings_[block.getArgNumber()] = axes.vec();
}

FailureOr<func::FuncOp> Graph::finish(ArrayRef<Tensor> results) {
  SmallVector<Value> values;
  SmallVector<Type> types;
  for (const Tensor &t : results) {
    values.push_back(t.value());
    types.push_back(t.value().getType());
  }
  func::ReturnOp::create(builder_, loc(), values);
  func_.setFunctionType(builder_.getFunctionType(body_->getArgumentTypes(), types));
  for (auto [i, attr] : llvm::enumerate(argAttrs_)) {
    func_.setArgAttr(i, attr.first, builder_.getStringAttr(attr.second));
    if (!argInits_[i].empty())
      func_.setArgAttr(i, KilnDialect::kInitAttrName, builder_.getStringAttr(argInits_[i]));
    if (!argRoles_[i].empty())
      func_.setArgAttr(i, KilnDialect::kRoleAttrName, builder_.getStringAttr(argRoles_[i]));
    if (!argShardings_[i].empty()) {
      SmallVector<ShardingAttr::Axes> dims;
      for (const std::vector<std::string> &axes : argShardings_[i]) {
        dims.emplace_back();
        for (const std::string &axis : axes)
          dims.back().push_back(builder_.getStringAttr(axis));
      }
      func_.setArgAttr(i, KilnDialect::kShardingAttrName, ShardingAttr::of(context(), dims, {}));
    }
  }
  if (!errors_.empty())
    return failure();
  // Verification failures become graph errors too, so callers report them
  // like any other construction problem.
  ScopedDiagnosticHandler handler(context(), [&](Diagnostic &diag) {
    std::string s;
    llvm::raw_string_ostream os(s);
    os << diag.getLocation() << ": " << diag.str();
    errors_.push_back(s);
    return success();
  });
  if (failed(verify(func_)))
    return failure();
  return func_;
}

//===----------------------------------------------------------------------===//
// Broadcasting
//===----------------------------------------------------------------------===//

namespace {

std::string typeString(Type t) {
  std::string s;
  llvm::raw_string_ostream(s) << t;
  return s;
}

/// The NumPy broadcast of two shapes, or nullopt when they are incompatible.
std::optional<SmallVector<int64_t>> broadcastShapes(ArrayRef<int64_t> a, ArrayRef<int64_t> b) {
  size_t rank = std::max(a.size(), b.size());
  SmallVector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da != db && da != 1 && db != 1)
      return std::nullopt;
    out[i] = da == 1 ? db : da;
  }
  return out;
}

/// Broadcasts both operands to their common shape, recording an error (and
/// returning them unchanged) when shapes or element types disagree.
std::pair<Tensor, Tensor> broadcastPair(Tensor a, Tensor c, StringRef what) {
  Graph &g = a.graph();
  if (a.elementType() != c.elementType()) {
    g.error(what + ": element types differ: " + typeString(a.type()) + " vs " +
            typeString(c.type()));
    return {a, a};
  }
  auto shape = broadcastShapes(a.shape(), c.shape());
  if (!shape) {
    g.error(what + ": cannot broadcast " + typeString(a.type()) + " with " + typeString(c.type()));
    return {a, a};
  }
  return {broadcastTo(a, *shape), broadcastTo(c, *shape)};
}

template <typename OpTy> Tensor binaryOp(Tensor a, Tensor c, StringRef what) {
  auto [x, y] = broadcastPair(a, c, what);
  Graph &g = a.graph();
  return g.wrap(OpTy::create(g.builder(), g.loc(), x.type(), x.value(), y.value()));
}

template <typename OpTy> Tensor unaryOp(Tensor x) {
  Graph &g = x.graph();
  return g.wrap(OpTy::create(g.builder(), g.loc(), x.type(), x.value()));
}

Tensor scalarLike(Tensor x, double value) {
  Graph &g = x.graph();
  return g.wrap(b::splatLike(g.builder(), g.loc(), x.value(), value));
}

} // namespace

Tensor broadcastTo(Tensor x, ArrayRef<int64_t> shape) {
  if (x.shape() == shape)
    return x;
  Graph &g = x.graph();
  int64_t lead = static_cast<int64_t>(shape.size()) - x.rank();
  bool ok = lead >= 0;
  SmallVector<int64_t> dims;
  for (int64_t i = 0; ok && i < x.rank(); ++i) {
    ok = x.dim(i) == 1 || x.dim(i) == shape[lead + i];
    dims.push_back(lead + i);
  }
  if (!ok) {
    g.error("cannot broadcast " + typeString(x.type()) + " to " +
            typeString(x.type().clone(shape)));
    return x;
  }
  return g.wrap(b::broadcastInDim(g.builder(), g.loc(), x.value(), shape, dims));
}

//===----------------------------------------------------------------------===//
// Operations
//===----------------------------------------------------------------------===//

Tensor operator+(Tensor a, Tensor c) { return binaryOp<AddOp>(a, c, "add"); }
Tensor operator-(Tensor a, Tensor c) { return binaryOp<SubOp>(a, c, "sub"); }
Tensor operator*(Tensor a, Tensor c) { return binaryOp<MulOp>(a, c, "mul"); }
Tensor operator/(Tensor a, Tensor c) { return binaryOp<DivOp>(a, c, "div"); }
Tensor operator+(Tensor a, double c) { return a + scalarLike(a, c); }
Tensor operator-(Tensor a, double c) { return a - scalarLike(a, c); }
Tensor operator*(Tensor a, double c) { return a * scalarLike(a, c); }
Tensor operator/(Tensor a, double c) { return a / scalarLike(a, c); }
Tensor operator-(Tensor a) { return unaryOp<NegOp>(a); }
Tensor maximum(Tensor a, Tensor c) { return binaryOp<MaxOp>(a, c, "max"); }

Tensor exp(Tensor x) { return unaryOp<ExpOp>(x); }
Tensor log(Tensor x) { return unaryOp<LogOp>(x); }
Tensor sqrt(Tensor x) { return unaryOp<SqrtOp>(x); }
Tensor rsqrt(Tensor x) { return unaryOp<RsqrtOp>(x); }
Tensor tanh(Tensor x) { return unaryOp<TanhOp>(x); }
Tensor sigmoid(Tensor x) { return unaryOp<SigmoidOp>(x); }
Tensor silu(Tensor x) { return unaryOp<SiluOp>(x); }
Tensor relu(Tensor x) { return unaryOp<ReluOp>(x); }
Tensor softmax(Tensor x) { return unaryOp<SoftmaxOp>(x); }
Tensor logSoftmax(Tensor x) { return unaryOp<LogSoftmaxOp>(x); }

Tensor gelu(Tensor x, GeluApproximation approx) {
  Graph &g = x.graph();
  return g.wrap(GeluOp::create(g.builder(), g.loc(), x.type(), approx, x.value()));
}

Tensor cast(Tensor x, Type elementType) {
  Graph &g = x.graph();
  return g.wrap(b::convert(g.builder(), g.loc(), x.value(), elementType));
}

Tensor compare(CompareDirection dir, Tensor a, Tensor c) {
  auto [x, y] = broadcastPair(a, c, "compare");
  Graph &g = a.graph();
  return g.wrap(b::compare(g.builder(), g.loc(), dir, x.value(), y.value()));
}

Tensor where(Tensor cond, Tensor a, Tensor c) {
  auto [x, y] = broadcastPair(a, c, "where");
  Graph &g = a.graph();
  Tensor cb = broadcastTo(cond, x.shape());
  return g.wrap(b::select(g.builder(), g.loc(), cb.value(), x.value(), y.value()));
}

Tensor where(Tensor cond, Tensor a, double c) {
  Graph &g = a.graph();
  SmallVector<int64_t> shape(a.shape());
  if (auto s = broadcastShapes(a.shape(), cond.shape()))
    shape = *s;
  Tensor x = broadcastTo(a, shape);
  return where(cond, x, full(g, shape, c, a.elementType()));
}

Tensor reshape(Tensor x, ArrayRef<int64_t> shape) {
  Graph &g = x.graph();
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  if (n != x.type().getNumElements()) {
    g.error("cannot reshape " + typeString(x.type()) + " to " + typeString(x.type().clone(shape)));
    return x;
  }
  return g.wrap(b::reshape(g.builder(), g.loc(), x.value(), shape));
}

Tensor transpose(Tensor x, ArrayRef<int64_t> perm) {
  Graph &g = x.graph();
  return g.wrap(b::transpose(g.builder(), g.loc(), x.value(), perm));
}

Tensor slice(Tensor x, int64_t dim, int64_t start, int64_t limit) {
  Graph &g = x.graph();
  if (dim < 0)
    dim += x.rank();
  if (start < 0 || start > limit || limit > x.dim(dim)) {
    g.error("slice [" + Twine(start) + ":" + Twine(limit) + "] of dimension " + Twine(dim) +
            " is outside " + typeString(x.type()));
    return x;
  }
  SmallVector<int64_t> starts(x.rank(), 0), limits(x.shape()), strides(x.rank(), 1);
  starts[dim] = start;
  limits[dim] = limit;
  return g.wrap(b::slice(g.builder(), g.loc(), x.value(), starts, limits, strides));
}

Tensor concat(ArrayRef<Tensor> xs, int64_t dim) {
  Graph &g = xs.front().graph();
  SmallVector<Value> values;
  for (const Tensor &t : xs)
    values.push_back(t.value());
  return g.wrap(b::concat(g.builder(), g.loc(), values, dim));
}

Tensor broadcastInDim(Tensor x, ArrayRef<int64_t> shape, ArrayRef<int64_t> dims) {
  Graph &g = x.graph();
  bool ok = static_cast<int64_t>(dims.size()) == x.rank();
  for (int64_t i = 0; ok && i < x.rank(); ++i)
    ok = dims[i] >= 0 && dims[i] < static_cast<int64_t>(shape.size()) &&
         (x.dim(i) == 1 || x.dim(i) == shape[dims[i]]);
  if (!ok) {
    g.error("cannot broadcast " + typeString(x.type()) + " to " +
            typeString(x.type().clone(shape)) + " along the given dimensions");
    return x;
  }
  return g.wrap(b::broadcastInDim(g.builder(), g.loc(), x.value(), shape, dims));
}

Tensor iota(Graph &g, ArrayRef<int64_t> shape, int64_t dim, Type elementType) {
  return g.wrap(IotaOp::create(g.builder(), g.loc(), RankedTensorType::get(shape, elementType), dim));
}

Tensor full(Graph &g, ArrayRef<int64_t> shape, double value, Type elementType) {
  return g.wrap(b::splat(g.builder(), g.loc(), RankedTensorType::get(shape, elementType), value));
}

static SmallVector<int64_t> normalizeDims(Tensor x, ArrayRef<int64_t> dims) {
  SmallVector<int64_t> out;
  for (int64_t d : dims)
    out.push_back(d < 0 ? d + x.rank() : d);
  llvm::sort(out);
  return out;
}

Tensor sum(Tensor x, ArrayRef<int64_t> dims) {
  Graph &g = x.graph();
  return g.wrap(b::reduceSum(g.builder(), g.loc(), x.value(), normalizeDims(x, dims)));
}

Tensor mean(Tensor x, ArrayRef<int64_t> dims) {
  Graph &g = x.graph();
  return g.wrap(b::reduceMean(g.builder(), g.loc(), x.value(), normalizeDims(x, dims)));
}

Tensor mean(Tensor x) {
  SmallVector<int64_t> all;
  for (int64_t d = 0; d < x.rank(); ++d)
    all.push_back(d);
  return mean(x, all);
}

Tensor max(Tensor x, ArrayRef<int64_t> dims) {
  Graph &g = x.graph();
  return g.wrap(b::reduceMax(g.builder(), g.loc(), x.value(), normalizeDims(x, dims)));
}

Tensor matmul(Tensor a, Tensor c, bool transposeA, bool transposeB) {
  Graph &g = a.graph();
  int64_t ka = transposeA ? a.dim(-2) : a.dim(-1);
  int64_t kc = transposeB ? c.dim(-1) : c.dim(-2);
  bool batchOk = a.rank() == 2 || c.rank() == 2 ||
                 a.shape().drop_back(2) == c.shape().drop_back(2);
  if (a.rank() < 2 || c.rank() < 2 || ka != kc || !batchOk) {
    g.error("matmul: incompatible operands " + typeString(a.type()) +
            (transposeA ? " (transposed)" : "") + " and " + typeString(c.type()) +
            (transposeB ? " (transposed)" : ""));
    return a;
  }
  return g.wrap(b::matmul(g.builder(), g.loc(), a.value(), c.value(), transposeA, transposeB));
}

Tensor layerNorm(Tensor x, Tensor weight, Tensor bias, double eps) {
  Graph &g = x.graph();
  auto stats = x.type().clone(x.shape().drop_back(),
                              x.elementType().isF64() ? x.elementType() : g.f32());
  auto op = LayerNormOp::create(g.builder(), g.loc(), x.type(), stats, stats, x.value(),
                                weight.value(), bias.value(), g.builder().getF32FloatAttr(eps));
  return g.wrap(op.getY());
}

Tensor rmsNorm(Tensor x, Tensor weight, double eps) {
  Graph &g = x.graph();
  auto stats = x.type().clone(x.shape().drop_back(),
                              x.elementType().isF64() ? x.elementType() : g.f32());
  auto op = RmsNormOp::create(g.builder(), g.loc(), x.type(), stats, x.value(), weight.value(),
                              g.builder().getF32FloatAttr(eps));
  return g.wrap(op.getY());
}

Tensor rope(Tensor x, double theta) {
  Graph &g = x.graph();
  return g.wrap(RopeOp::create(g.builder(), g.loc(), x.type(), x.value(),
                               g.builder().getF32FloatAttr(theta), UnitAttr(), IntegerAttr()));
}

Tensor embedding(Tensor table, Tensor ids) {
  Graph &g = table.graph();
  SmallVector<int64_t> shape(ids.shape());
  shape.push_back(table.dim(-1));
  return g.wrap(EmbeddingOp::create(g.builder(), g.loc(), table.type().clone(shape),
                                    table.value(), ids.value()));
}

Tensor crossEntropy(Tensor logits, Tensor targets, int64_t validClasses) {
  Graph &g = logits.graph();
  auto stats = logits.type().clone(logits.shape().drop_back(),
                                   logits.elementType().isF64() ? logits.elementType() : g.f32());
  IntegerAttr valid;
  if (validClasses != logits.dim(-1))
    valid = g.builder().getI64IntegerAttr(validClasses);
  auto op = CrossEntropyOp::create(g.builder(), g.loc(), stats, stats, logits.value(),
                                   targets.value(), valid);
  return g.wrap(op.getLoss());
}

MoeRoute moeRoute(Tensor probs, int64_t topK, int64_t capacity) {
  Graph &g = probs.graph();
  const int64_t n = probs.dim(-2), experts = probs.dim(-1);
  // Leading dimensions are groups, each routed on its own.
  SmallVector<int64_t> choiceShape(probs.shape().drop_back(2)), slotShape = choiceShape;
  choiceShape.append({n, topK});
  slotShape.push_back(experts * capacity);
  auto choices = RankedTensorType::get(choiceShape, g.i32());
  auto slots = RankedTensorType::get(slotShape, g.i32());
  auto op = MoeRouteOp::create(g.builder(), g.loc(), choices, choices, slots, probs.value(),
                               g.builder().getI64IntegerAttr(topK),
                               g.builder().getI64IntegerAttr(capacity));
  return {g.wrap(op.getExpert()), g.wrap(op.getSlot()), g.wrap(op.getToken())};
}

} // namespace kiln::frontend
