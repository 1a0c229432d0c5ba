/* The core's clock, measured: n rounds of eight dependent 64-bit adds. Each add waits for the one before it
 * and takes one cycle on every x86-64 core, so a round is eight cycles; the loop's own counter and branch run
 * beside the chain in other units. Built by measure/native.py, called by measure/clock.py. */
#include <stdint.h>

uint64_t enginebench_add_chain(uint64_t rounds) {
    uint64_t x = 0;
    for (uint64_t i = 0; i < rounds; i++) {
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                         "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
                         : "+r"(x));
    }
    return x;
}
