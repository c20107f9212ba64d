// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * strait_xdp_test.c — strait_xdp.c with the test hooks compiled in (fib.h's
 * fib_test, dsr.h's dsr_test, conntrack.h's ct{4,6}_race), for test/bpf and
 * the XDP benchmark only; never attached.
 */
#define STRAIT_TEST_HOOKS 1
#include "strait_xdp.c"
