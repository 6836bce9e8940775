/* The floor for a whole-process libnftables apply: a minimal C program that runs one nftables
 * script through libnftables and exits. hack/bench-init.sh times it beside `capstan init`, so the
 * cost of the Swift process itself can be told apart from libnftables'. */
#include <nftables/libnftables.h>
#include <stdio.h>

int main(int argc, char **argv) {
    static char script[1 << 16];
    FILE *file = argc > 1 ? fopen(argv[1], "r") : NULL;
    if (!file) return 2;
    size_t length = fread(script, 1, sizeof script - 1, file);
    fclose(file);
    script[length] = 0;
    struct nft_ctx *context = nft_ctx_new(NFT_CTX_DEFAULT);
    nft_ctx_buffer_output(context);
    int status = nft_run_cmd_from_buffer(context, script);
    nft_ctx_free(context);
    return status;
}
