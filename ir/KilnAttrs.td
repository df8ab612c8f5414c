//===- KilnAttrs.td - attributes of the kiln dialect -----------------------===//
//
// The device mesh and the sharding of a value (docs/sharding.md).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_ATTRS_TD
#define KILN_ATTRS_TD

include "ir/KilnBase.td"
include "mlir/IR/AttrTypeBase.td"

class Kiln_Attr<string name, string attrMnemonic> : AttrDef<Kiln_Dialect, name> {
  let mnemonic = attrMnemonic;
}

def Kiln_MeshAttr : Kiln_Attr<"Mesh", "mesh"> {
  let summary = "a device mesh: named axes and their sizes";
  let description = [{
    The ranks of a run laid out as an N-dimensional grid, each axis named.
    Ranks are numbered row-major over the axes in order, so the last axis
    varies fastest (`#kiln.mesh<dp = 2, tp = 2>`: ranks 0 and 1 form one
    tp group, 0 and 2 one dp group). The module carries it as `kiln.mesh`.

    ```mlir
    module attributes {kiln.mesh = #kiln.mesh<dp = 2, tp = 1>} { ... }
    ```
  }];
  let parameters = (ins ArrayRefParameter<"::mlir::StringAttr", "axis names">:$names,
                        ArrayRefParameter<"int64_t", "axis sizes">:$sizes);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The size of axis `name`; 1 for an axis the mesh does not have.
    int64_t getAxisSize(::llvm::StringRef name) const;
    /// The product of the axis sizes.
    int64_t getNumRanks() const;
  }];
}

def Kiln_ShardingAttr : Kiln_Attr<"Sharding", "sharding"> {
  let summary = "how a value is split over the mesh";
  let description = [{
    One entry per dimension of the value: the mesh axis that splits it, or
    several in braces, major first (the dimension cut into the product of
    their sizes; rank chunk index = the coordinates read as a mixed-radix
    number), or `_` when every rank holds the whole dimension; then the axes
    over which the value is a pending partial sum (each rank holds a
    summand; the value is the sum over the axis). A value with no sharding
    is replicated.

    ```mlir
    #kiln.sharding<[dp, _, _]>              // batch split over dp
    #kiln.sharding<[{edp, ep}, _, _]>       // batch split over edp × ep
    #kiln.sharding<[_, tp]>                 // a column-parallel weight
    #kiln.sharding<[_, _], partial = [dp]>  // a gradient before its all-reduce
    ```
  }];
  let parameters = (ins ArrayRefParameter<"::mlir::ArrayAttr", "axes per dimension">:$dims,
                        ArrayRefParameter<"::mlir::StringAttr", "partial-sum axes">:$partial);
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// The axes splitting one dimension, major first (empty: whole).
    using Axes = ::llvm::SmallVector<::mlir::StringAttr, 2>;
    /// From per-dimension axis lists.
    static ShardingAttr of(::mlir::MLIRContext *context, ::llvm::ArrayRef<Axes> dims,
                           ::llvm::ArrayRef<::mlir::StringAttr> partial);
    /// Every dimension whole and nothing partial.
    static ShardingAttr getReplicated(::mlir::MLIRContext *context, int64_t rank);
    bool isReplicated() const;
    size_t getRank() const { return getDims().size(); }
    /// The axes splitting dimension `d`, major first; empty when whole (or
    /// past the last dimension).
    Axes getAxes(unsigned d) const;
    /// Every dimension's axes.
    ::llvm::SmallVector<Axes> getAllAxes() const;
    bool isSplit(unsigned d) const { return !getAxes(d).empty(); }
    /// Whether some dimension is split over `axis`.
    bool splitsOver(::llvm::StringRef axis) const;
    bool isPartial() const { return !getPartial().empty(); }
    /// This sharding without its partial axes.
    ShardingAttr withoutPartial() const;
    /// Into how many parts dimension `d` is cut on `mesh`.
    int64_t splitSize(unsigned d, MeshAttr mesh) const;
    /// The per-rank shape of `globalShape` on `mesh`.
    ::llvm::SmallVector<int64_t> localShape(::llvm::ArrayRef<int64_t> globalShape,
                                            MeshAttr mesh) const;
  }];
}

#endif // KILN_ATTRS_TD
