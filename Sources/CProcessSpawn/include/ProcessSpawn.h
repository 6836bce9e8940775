#ifndef CAPSTAN_PROCESS_SPAWN_H
#define CAPSTAN_PROCESS_SPAWN_H

#include <spawn.h>

/// Adds a file action closing every descriptor from `from` up in the child: glibc's
/// posix_spawn_file_actions_addclosefrom_np, which Swift's Glibc module does not declare (it needs
/// _GNU_SOURCE). Returns 0 or an errno value.
int capstan_spawn_close_from(posix_spawn_file_actions_t *actions, int from);

#endif
