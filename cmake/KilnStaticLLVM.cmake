# KilnStaticLLVM — make the tools independent of libLLVM.so.
#
# Debian's MLIR CMake package links every MLIR library against the imported
# target `LLVM`, i.e. libLLVM.so. kiln's binaries must run on GPU hosts that
# have no LLVM installed, so we retarget that imported target at the few
# static LLVM archives MLIR actually needs (Support, TargetParser, Remarks, BitstreamReader, Demangle),
# plus static zlib/zstd, and link libstdc++/libgcc statically. The result
# depends only on libc, libm, libdl and libpthread (tests/unit checks `ldd`).
set(_kiln_llvm_libs
  "${LLVM_LIBRARY_DIR}/libLLVMTargetParser.a"
  "${LLVM_LIBRARY_DIR}/libLLVMRemarks.a"
  "${LLVM_LIBRARY_DIR}/libLLVMBitstreamReader.a"
  "${LLVM_LIBRARY_DIR}/libLLVMSupport.a"
  "${LLVM_LIBRARY_DIR}/libLLVMDemangle.a")
foreach(_lib IN LISTS _kiln_llvm_libs)
  if(NOT EXISTS "${_lib}")
    message(FATAL_ERROR "KILN_STATIC_LLVM: ${_lib} is missing (install llvm-22-dev), "
                        "or configure with -DKILN_STATIC_LLVM=OFF")
  endif()
endforeach()
find_library(KILN_ZLIB_STATIC NAMES libz.a REQUIRED)
find_library(KILN_ZSTD_STATIC NAMES libzstd.a REQUIRED)

get_target_property(_kiln_llvm_type LLVM TYPE)
foreach(_cfg RELWITHDEBINFO RELEASE DEBUG MINSIZEREL NOCONFIG)
  set_property(TARGET LLVM PROPERTY IMPORTED_LOCATION_${_cfg} "${LLVM_LIBRARY_DIR}/libLLVMSupport.a")
  set_property(TARGET LLVM PROPERTY IMPORTED_SONAME_${_cfg} "")
endforeach()
set_property(TARGET LLVM PROPERTY IMPORTED_NO_SONAME TRUE)
set_property(TARGET LLVM PROPERTY INTERFACE_LINK_LIBRARIES
  ${_kiln_llvm_libs} "${KILN_ZSTD_STATIC}" "${KILN_ZLIB_STATIC}" pthread dl m rt)

set(KILN_STATIC_LINK_FLAGS -static-libstdc++ -static-libgcc)
