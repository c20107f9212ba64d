// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * strait_tc_bench.c — strait_tc.c with only the benchmark restore hook
 * (lib/dsr.h dsr_test, dsr_bench_restore) compiled in, for bench/xdp.ts's
 * tc column. Never attached.
 */
#define STRAIT_BENCH_HOOKS 1
#include "strait_tc.c"
