#ifndef CAPSTAN_NFTABLES_LIBRARY_H
#define CAPSTAN_NFTABLES_LIBRARY_H

#include <stdint.h>

/// libnftables, loaded when first used rather than when the process starts. One `capstan` binary is
/// the init container, the CNI plugin, the agent and the proxy, and only init and the node agent program
/// nftables: linked at start, libnftables and the libraries it needs (libnftnl, libxtables, libjansson,
/// libgmp) would be mapped and relocated by every one of them, and a CNI plugin copied to a node without
/// libnftables would not start at all.
struct nft_ctx;

/// Loads libnftables.so.1 once (later calls return at once). Returns NULL when it is loaded, otherwise
/// the dynamic loader's reason. Call it before any function below.
const char *capstan_nft_load(void);

/// libnftables' functions of the same names without the `capstan_` prefix (see libnftables(3)).
struct nft_ctx *capstan_nft_ctx_new(uint32_t flags);
void capstan_nft_ctx_free(struct nft_ctx *ctx);
int capstan_nft_ctx_buffer_output(struct nft_ctx *ctx);
int capstan_nft_ctx_buffer_error(struct nft_ctx *ctx);
const char *capstan_nft_ctx_get_output_buffer(struct nft_ctx *ctx);
const char *capstan_nft_ctx_get_error_buffer(struct nft_ctx *ctx);
int capstan_nft_run_cmd_from_buffer(struct nft_ctx *ctx, const char *buffer);

/// NFT_CTX_DEFAULT.
#define CAPSTAN_NFT_CTX_DEFAULT 0

#endif
