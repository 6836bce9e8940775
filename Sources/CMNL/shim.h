#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/fib_rules.h>
#include <linux/if_addr.h>
#include <net/if.h>
#include <sys/fsuid.h>
#include <sys/vfs.h>

/* setns(2) is behind _GNU_SOURCE in glibc's <sched.h>; declare the one call Netfilter needs. */
extern int setns(int fd, int nstype);
static inline int capstan_enter_network_namespace(int fd) { return setns(fd, 0x40000000 /* CLONE_NEWNET */); }
