#include "Allocator.h"

#include <malloc.h>

int capstan_map_large_allocations(size_t threshold) {
    return mallopt(M_MMAP_THRESHOLD, (int)threshold);
}
