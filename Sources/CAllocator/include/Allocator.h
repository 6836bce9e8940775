#ifndef CAPSTAN_ALLOCATOR_H
#define CAPSTAN_ALLOCATOR_H

#include <stddef.h>

/// Serves every allocation of `threshold` bytes or more with its own mapping, returned to the system
/// when freed: glibc's mallopt(M_MMAP_THRESHOLD), which Swift's Glibc module does not declare. Setting
/// it also stops glibc from raising the threshold to the size of the largest block freed, which
/// otherwise keeps a burst of large buffers in the heap for good. Returns 1 on success, 0 on error.
int capstan_map_large_allocations(size_t threshold);

#endif
