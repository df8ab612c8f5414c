//===- Graph.h - the C++ builder API that emits kiln IR --------------------===//
//
// A Graph builds one func.func: named parameters (`kiln.param`, with their
// initializer in `kiln.init`) and inputs (`kiln.input`) become arguments,
// Tensor operations append kiln ops, and finish() sets the results. Binary
// operations broadcast NumPy-style by inserting explicit
// `kiln.broadcast_in_dim`, so the IR itself never broadcasts implicitly.
//
//   Graph g(module, "forward");
//   Tensor x = g.input("x", {4, 8}, g.f32());
//   Tensor w = g.param("w", {8, 16}, ParamInit::normal(0.02));
//   Tensor y = gelu(matmul(x, w)) * 0.5;
//   g.finish({mean(y)});
//
// Name scopes (`auto s = g.scope("h.0")`) prefix parameter names and give
// ops NameLoc locations, so dumps speak the model's names.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_FRONTEND_GRAPH_H
#define KILN_FRONTEND_GRAPH_H

#include "ir/KilnDialect.h"
#include "ir/KilnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace kiln::frontend {

class Graph;

/// A value of the graph under construction: an SSA value and its graph.
class Tensor {
public:
  Tensor() = default;
  Tensor(Graph *graph, mlir::Value value) : graph_(graph), value_(value) {}

  mlir::Value value() const { return value_; }
  Graph &graph() const { return *graph_; }
  mlir::RankedTensorType type() const;
  llvm::ArrayRef<int64_t> shape() const { return type().getShape(); }
  int64_t rank() const { return type().getRank(); }
  /// Dimension i; negative i counts from the end.
  int64_t dim(int64_t i) const { return shape()[i < 0 ? i + rank() : i]; }
  mlir::Type elementType() const { return type().getElementType(); }
  explicit operator bool() const { return static_cast<bool>(value_); }

private:
  Graph *graph_ = nullptr;
  mlir::Value value_;
};

class Graph {
public:
  /// Starts a function `name` at the end of `module`.
  Graph(mlir::ModuleOp module, llvm::StringRef name);

  /// A trainable parameter argument named `<scope>.<name>`. `role`
  /// ("weight", "bias", "norm", "embedding") selects per-role optimizer
  /// settings such as weight decay.
  Tensor param(llvm::StringRef name, llvm::ArrayRef<int64_t> shape, ParamInit init,
               llvm::StringRef role = "weight", mlir::Type elementType = {});
  /// A step input argument (tokens, targets, ...).
  Tensor input(llvm::StringRef name, llvm::ArrayRef<int64_t> shape, mlir::Type elementType);

  /// Marks argument `arg` as split over mesh axes, one entry per dimension
  /// ("" keeps it whole): `g.shard(tokens, {"dp", ""})` splits the batch
  /// over the data-parallel axis. The mesh is configuration; on a mesh
  /// without the axis, or where it has size 1, nothing is split.
  void shard(const Tensor &arg, llvm::ArrayRef<llvm::StringRef> axes);
  /// The same with several axes per dimension, major first: `{{"edp",
  /// "ep"}, {}}` splits the batch over edp × ep.
  void shard(const Tensor &arg, llvm::ArrayRef<std::vector<std::string>> axes);

  /// Sets the results and returns the function; fails (with the recorded
  /// errors) if any operation had incompatible operands, or if the function
  /// does not verify.
  mlir::FailureOr<mlir::func::FuncOp> finish(llvm::ArrayRef<Tensor> results);

  /// The float type parameters get by default (f32; f64 for gradient checks).
  mlir::Type floatType() const { return floatType_; }
  void setFloatType(mlir::Type t) { floatType_ = t; }

  mlir::Type f32() { return builder_.getF32Type(); }
  mlir::Type f64() { return builder_.getF64Type(); }
  mlir::Type i32() { return builder_.getI32Type(); }

  mlir::OpBuilder &builder() { return builder_; }
  mlir::MLIRContext *context() { return builder_.getContext(); }
  /// The location of new ops: the current name scope.
  mlir::Location loc();

  /// Records a construction error (reported by finish()).
  void error(const llvm::Twine &message);
  llvm::ArrayRef<std::string> errors() const { return errors_; }

  /// RAII name scope: pushes `name` for parameters and locations.
  class Scope {
  public:
    Scope(Graph &g, llvm::StringRef name) : g_(g) { g_.scopes_.push_back(name.str()); }
    ~Scope() { g_.scopes_.pop_back(); }
    Scope(const Scope &) = delete;
    Scope &operator=(const Scope &) = delete;

  private:
    Graph &g_;
  };
  [[nodiscard]] Scope scope(llvm::StringRef name) { return Scope(*this, name); }
  /// `<scope>.<name>` (or `name` at top level).
  std::string qualified(llvm::StringRef name) const;

  Tensor wrap(mlir::Value v) { return Tensor(this, v); }

private:
  mlir::BlockArgument addArgument(mlir::Type type, llvm::StringRef attr, llvm::StringRef name);

  mlir::OpBuilder builder_;
  mlir::func::FuncOp func_;
  mlir::Block *body_;
  mlir::Type floatType_;
  std::vector<std::string> scopes_;
  std::vector<std::string> errors_;
  std::vector<std::pair<std::string, std::string>> argAttrs_; // (attr, name) per argument
  std::vector<std::string> argInits_, argRoles_;
  /// Per argument, the axes of each dimension (none: not annotated).
  std::vector<std::vector<std::vector<std::string>>> argShardings_;
};

//===----------------------------------------------------------------------===//
// Operations. Binary ones broadcast NumPy-style; scalars become splats.
//===----------------------------------------------------------------------===//

Tensor operator+(Tensor a, Tensor b);
Tensor operator-(Tensor a, Tensor b);
Tensor operator*(Tensor a, Tensor b);
Tensor operator/(Tensor a, Tensor b);
Tensor operator+(Tensor a, double b);
Tensor operator-(Tensor a, double b);
Tensor operator*(Tensor a, double b);
Tensor operator/(Tensor a, double b);
Tensor operator-(Tensor a);
Tensor maximum(Tensor a, Tensor b);

Tensor exp(Tensor x);
Tensor log(Tensor x);
Tensor sqrt(Tensor x);
Tensor rsqrt(Tensor x);
Tensor tanh(Tensor x);
Tensor sigmoid(Tensor x);
Tensor gelu(Tensor x, GeluApproximation approx = GeluApproximation::tanh);
Tensor silu(Tensor x);
Tensor relu(Tensor x);
Tensor cast(Tensor x, mlir::Type elementType);

Tensor compare(CompareDirection dir, Tensor a, Tensor b);
/// cond ? a : b, broadcasting all three.
Tensor where(Tensor cond, Tensor a, Tensor b);
Tensor where(Tensor cond, Tensor a, double b);

Tensor reshape(Tensor x, llvm::ArrayRef<int64_t> shape);
Tensor transpose(Tensor x, llvm::ArrayRef<int64_t> perm);
/// x[..., start:limit, ...] along `dim`.
Tensor slice(Tensor x, int64_t dim, int64_t start, int64_t limit);
Tensor concat(llvm::ArrayRef<Tensor> xs, int64_t dim);
/// NumPy broadcast to `shape`.
Tensor broadcastTo(Tensor x, llvm::ArrayRef<int64_t> shape);
/// kiln.broadcast_in_dim: dimension i of x becomes dimension dims[i] of
/// the result (of size 1 or equal).
Tensor broadcastInDim(Tensor x, llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<int64_t> dims);
Tensor iota(Graph &g, llvm::ArrayRef<int64_t> shape, int64_t dim, mlir::Type elementType);
Tensor full(Graph &g, llvm::ArrayRef<int64_t> shape, double value, mlir::Type elementType);

Tensor sum(Tensor x, llvm::ArrayRef<int64_t> dims);
Tensor mean(Tensor x, llvm::ArrayRef<int64_t> dims);
/// Mean over every dimension: a rank-0 tensor.
Tensor mean(Tensor x);
Tensor max(Tensor x, llvm::ArrayRef<int64_t> dims);

/// Batched matrix product; one operand may be a plain matrix shared by the
/// other's batch.
Tensor matmul(Tensor a, Tensor b, bool transposeA = false, bool transposeB = false);

Tensor softmax(Tensor x);
Tensor logSoftmax(Tensor x);
Tensor layerNorm(Tensor x, Tensor weight, Tensor bias, double eps);
Tensor rmsNorm(Tensor x, Tensor weight, double eps);
Tensor rope(Tensor x, double theta = 10000.0);
Tensor embedding(Tensor table, Tensor ids);
/// Per-position softmax cross-entropy over the first `validClasses` classes.
Tensor crossEntropy(Tensor logits, Tensor targets, int64_t validClasses);

/// A mixture-of-experts router's choice (kiln.moe_route) over scores [N, E]:
/// each token's top-k experts [N, k], the slot each choice got [N, k]
/// (E·capacity: dropped) and the token in each slot [E·capacity] (N:
/// empty), all i32.
struct MoeRoute {
  Tensor expert, slot, token;
};
MoeRoute moeRoute(Tensor probs, int64_t topK, int64_t capacity);

} // namespace kiln::frontend

#endif // KILN_FRONTEND_GRAPH_H
