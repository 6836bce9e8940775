#define _GNU_SOURCE
#include "CProcessIdentity.h"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int capstan_become(uid_t uid, gid_t gid, bool keep_net_admin) {
    // Keep the permitted set across the uid change, then trim it to what is needed.
    if (keep_net_admin && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) return -1;
    if (setgroups(0, NULL) != 0) return -1;
    if (setresgid(gid, gid, gid) != 0) return -1;
    if (setresuid(uid, uid, uid) != 0) return -1;
    if (!keep_net_admin) return 0;

    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[2] = { { 0 }, { 0 } };
    data[CAP_TO_INDEX(CAP_NET_ADMIN)].permitted = CAP_TO_MASK(CAP_NET_ADMIN);
    data[CAP_TO_INDEX(CAP_NET_ADMIN)].effective = CAP_TO_MASK(CAP_NET_ADMIN);
    if (syscall(SYS_capset, &header, data) != 0) return -1;
    return prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
}
