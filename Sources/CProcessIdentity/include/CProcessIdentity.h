#ifndef CAPSTAN_PROCESS_IDENTITY_H
#define CAPSTAN_PROCESS_IDENTITY_H

#include <stdbool.h>
#include <sys/types.h>

/// Becomes uid/gid (no supplementary groups). With keep_net_admin, CAP_NET_ADMIN stays permitted and
/// effective (TPROXY needs it for IP_TRANSPARENT and SO_MARK); every other capability is dropped.
/// Call before the process starts threads: capabilities are per thread and new threads inherit them.
/// Returns 0, or -1 with errno set.
int capstan_become(uid_t uid, gid_t gid, bool keep_net_admin);

#endif
