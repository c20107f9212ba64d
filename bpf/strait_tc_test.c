// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * strait_tc_test.c — strait_tc.c with the test hooks compiled in, for
 * test/bpf only; never attached. STRAIT_TEST_HOOKS adds the ct4_race /
 * ct6_race maps (lib/conntrack.h) that let a test play the CPU that wins a
 * conntrack insert race.
 */
#define STRAIT_TEST_HOOKS 1
#include "strait_tc.c"
