//===- MeshLayout.h - how a partitioned module's tensors split over ranks --===//
//
// What a backend running a module partitioned over a mesh (kiln-partition)
// needs to know to present global tensors to the training loop: the mesh's
// axes, which axis splits each dimension of every input, output, parameter
// and state (their kiln.sharding), and each rank's part of a global tensor.
// MeshCpuBackend (every rank a thread) and dist::RankBackend (this process
// one rank) both read it.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_MESHLAYOUT_H
#define KILN_RUNTIME_MESHLAYOUT_H

#include "runtime/Backend.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

/// The mesh axes splitting each dimension of a tensor, major first (none
/// for a whole one): a dimension split over [a, b] holds, on the rank at
/// coordinates (i, j), chunk i·|b| + j.
using DimAxes = std::vector<std::vector<std::string>>;

/// A mesh: its axes' names and sizes, ranks numbered row-major over them
/// (the last axis varies fastest), as #kiln.mesh says.
using MeshAxes = std::vector<std::pair<std::string, int64_t>>;

/// Whether any dimension of `axes` is split.
bool isSplit(const DimAxes &axes);

/// Rank `rank`'s coordinate along `axis`, and the axis's size; 0 and 1 for
/// an axis the mesh does not have. A collective's `axis` may name several
/// axes joined by ',' ("edp,ep", major first): the group is then the ranks
/// differing only in those coordinates, its size their product and a
/// rank's coordinate i·|ep| + j at (i, j), as a dimension split over
/// [edp, ep] numbers its chunks.
int64_t meshCoordinate(const MeshAxes &mesh, int64_t rank, llvm::StringRef axis);
int64_t meshAxisSize(const MeshAxes &mesh, llvm::StringRef axis);
/// The ranks of `rank`'s group along `axis` (those differing from it only
/// in that coordinate, or those coordinates), in order of their coordinate.
std::vector<int64_t> meshGroup(const MeshAxes &mesh, int64_t rank, llvm::StringRef axis);
/// "dp = 2, tp = 1".
std::string describeMesh(const MeshAxes &mesh);

class MeshLayout {
public:
  /// Per function: the axes splitting each input and each output, by name.
  struct Function {
    std::map<std::string, DimAxes> inputs, outputs;
    /// The inputs' shapes on one rank (their parts' shapes).
    std::map<std::string, std::vector<int64_t>> inputShapes;
    /// Partitioned (kiln.partitioned): its ranks run collectives together.
    bool partitioned = false;
    /// Some result replaces a parameter or state in place.
    bool updatesState = false;
  };

  /// The layout of `module`, which must carry a kiln.mesh.
  static llvm::Expected<MeshLayout> of(mlir::ModuleOp module);

  const MeshAxes &axes() const { return axes_; }
  int64_t numRanks() const { return numRanks_; }
  int64_t coordinate(int64_t rank, llvm::StringRef axis) const {
    return meshCoordinate(axes_, rank, axis);
  }
  int64_t axisSize(llvm::StringRef axis) const { return meshAxisSize(axes_, axis); }
  /// Into how many parts `axes` cut a dimension, and which of them rank
  /// `rank` holds.
  int64_t partsOf(const std::vector<std::string> &axes) const;
  int64_t chunkOf(const std::vector<std::string> &axes, int64_t rank) const;

  /// The function `fn`'s layouts, or null when the module has none such.
  const Function *function(llvm::StringRef fn) const;
  /// The axes of a split parameter or state (ZeRO, tensor parallelism), or
  /// null when every rank holds it whole.
  const DimAxes *stateAxes(llvm::StringRef name) const;
  bool hasSplitState() const { return !stateAxes_.empty(); }

  /// `local` (the specs of one rank's partitioned functions) with each
  /// split state's shape made global.
  std::vector<StateSpec> globalSpecs(llvm::ArrayRef<StateSpec> local) const;
  /// The global shape of a tensor whose part on one rank has `shape`.
  std::vector<int64_t> globalShape(std::vector<int64_t> shape, const DimAxes &axes) const;
  /// Rank `rank`'s part of the global tensor `t` split as `axes`.
  cpu::HostTensor partOf(const cpu::HostTensor &t, const DimAxes &axes, int64_t rank) const;
  /// The state of `specs` (global shapes) initialized whole from `seed`,
  /// as on one device: a run's numbers do not depend on the mesh.
  static llvm::Expected<NamedTensors> initialState(llvm::ArrayRef<StateSpec> specs, uint64_t seed);
  /// Rank `rank`'s part of the state tensors `tensors` (whole ones pass
  /// through); a split tensor whose shape is not its global one in `specs`
  /// is an error naming it.
  llvm::Expected<NamedTensors> partsFor(const NamedTensors &tensors,
                                        llvm::ArrayRef<StateSpec> specs, int64_t rank) const;
  /// Writes rank `rank`'s part `part` into the global tensor `whole`.
  void place(cpu::HostTensor &whole, const cpu::HostTensor &part, const DimAxes &axes,
             int64_t rank) const;

private:
  MeshAxes axes_;
  int64_t numRanks_ = 1;
  std::map<std::string, Function> functions_;
  std::map<std::string, DimAxes> stateAxes_;
};

} // namespace kiln

#endif // KILN_RUNTIME_MESHLAYOUT_H
