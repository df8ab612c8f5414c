//===- SentencePieceModule.h - the C interface of libkiln-sentencepiece ----===//
//
// Plain C so that the module (built against libsentencepiece and the shared
// libstdc++) and kiln (libstdc++ linked statically) share no C++ object:
// memory is only ever freed by the side that allocated it. Bump
// KILN_SPM_ABI_VERSION when a signature changes.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DATA_SENTENCEPIECE_SENTENCEPIECEMODULE_H
#define KILN_RUNTIME_DATA_SENTENCEPIECE_SENTENCEPIECEMODULE_H

#include <stddef.h>
#include <stdint.h>

#define KILN_SPM_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

typedef struct KilnSpm KilnSpm;
/// Receives a piece of the result; called any number of times.
typedef void (*KilnSpmIdSink)(void *context, const int32_t *ids, size_t count);
typedef void (*KilnSpmTextSink)(void *context, const char *text, size_t size);

uint32_t kiln_spm_abi_version(void);
/// Loads a .model file; on failure returns NULL and writes the reason to
/// `error` (NUL-terminated, truncated to `errorSize`).
KilnSpm *kiln_spm_open(const char *path, char *error, size_t errorSize);
void kiln_spm_close(KilnSpm *model);
int32_t kiln_spm_vocab_size(const KilnSpm *model);
/// -1 when the model has no such piece.
int32_t kiln_spm_eos(const KilnSpm *model);
int32_t kiln_spm_bos(const KilnSpm *model);
/// Thread-safe. Returns 0, or -1 after writing the reason to `error`.
int kiln_spm_encode(const KilnSpm *model, const char *text, size_t size, KilnSpmIdSink sink,
                    void *context, char *error, size_t errorSize);
int kiln_spm_decode(const KilnSpm *model, const int32_t *ids, size_t count, KilnSpmTextSink sink,
                    void *context, char *error, size_t errorSize);

#ifdef __cplusplus
}
#endif

#endif // KILN_RUNTIME_DATA_SENTENCEPIECE_SENTENCEPIECEMODULE_H
