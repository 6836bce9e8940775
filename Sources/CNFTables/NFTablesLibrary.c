#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <nftables/libnftables.h>

#include "NFTablesLibrary.h"

_Static_assert(CAPSTAN_NFT_CTX_DEFAULT == NFT_CTX_DEFAULT, "NFT_CTX_DEFAULT changed");

/// The library's functions, typed by its own header so a changed signature fails the build.
static struct {
    __typeof__(&nft_ctx_new) ctx_new;
    __typeof__(&nft_ctx_free) ctx_free;
    __typeof__(&nft_ctx_buffer_output) ctx_buffer_output;
    __typeof__(&nft_ctx_buffer_error) ctx_buffer_error;
    __typeof__(&nft_ctx_get_output_buffer) ctx_get_output_buffer;
    __typeof__(&nft_ctx_get_error_buffer) ctx_get_error_buffer;
    __typeof__(&nft_run_cmd_from_buffer) run_cmd_from_buffer;
} library;
static char load_error[512];
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

static void load(void) {
    void *handle = dlopen("libnftables.so.1", RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        snprintf(load_error, sizeof load_error, "cannot load libnftables: %s", dlerror());
        return;
    }
#define RESOLVE(field, symbol)                                                                        \
    if ((library.field = (__typeof__(library.field))dlsym(handle, #symbol)) == NULL) {                \
        snprintf(load_error, sizeof load_error, "libnftables.so.1 has no %s", #symbol);              \
        return;                                                                                       \
    }
    RESOLVE(ctx_new, nft_ctx_new)
    RESOLVE(ctx_free, nft_ctx_free)
    RESOLVE(ctx_buffer_output, nft_ctx_buffer_output)
    RESOLVE(ctx_buffer_error, nft_ctx_buffer_error)
    RESOLVE(ctx_get_output_buffer, nft_ctx_get_output_buffer)
    RESOLVE(ctx_get_error_buffer, nft_ctx_get_error_buffer)
    RESOLVE(run_cmd_from_buffer, nft_run_cmd_from_buffer)
#undef RESOLVE
}

const char *capstan_nft_load(void) {
    pthread_once(&load_once, load);
    return load_error[0] ? load_error : NULL;
}

struct nft_ctx *capstan_nft_ctx_new(uint32_t flags) { return library.ctx_new(flags); }
void capstan_nft_ctx_free(struct nft_ctx *ctx) { library.ctx_free(ctx); }
int capstan_nft_ctx_buffer_output(struct nft_ctx *ctx) { return library.ctx_buffer_output(ctx); }
int capstan_nft_ctx_buffer_error(struct nft_ctx *ctx) { return library.ctx_buffer_error(ctx); }
const char *capstan_nft_ctx_get_output_buffer(struct nft_ctx *ctx) { return library.ctx_get_output_buffer(ctx); }
const char *capstan_nft_ctx_get_error_buffer(struct nft_ctx *ctx) { return library.ctx_get_error_buffer(ctx); }
int capstan_nft_run_cmd_from_buffer(struct nft_ctx *ctx, const char *buffer) { return library.run_cmd_from_buffer(ctx, buffer); }
