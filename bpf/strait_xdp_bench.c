// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * strait_xdp_bench.c — strait_xdp.c with only the benchmark restore hook
 * (lib/dsr.h dsr_test, lib/xdp.h xdp_bench_restore) compiled in, for
 * bench/xdp.ts: BPF_PROG_TEST_RUN's repeat mode then times the production
 * path of one established packet, plus the undo. Never attached.
 */
#define STRAIT_BENCH_HOOKS 1
#include "strait_xdp.c"
