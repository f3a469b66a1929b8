/* The ssi host API for C programs built for wasm32-wasi: process identity and
 * signals, cluster-wide. Each function returns a value, or a negated WASI errno
 * (-71 is ESRCH, -28 EINVAL, -58 ENOTSUP). See src/lib.rs for the table. */
#ifndef SSI_H
#define SSI_H

#include <stdint.h>

#define SSI_IMPORT(name) __attribute__((import_module("ssi"), import_name(#name)))

/* The caller's pid (its home node is in the high bits). */
int32_t ssi_getpid(void) SSI_IMPORT(getpid);
/* The parent's pid; 0 when the process was launched by a session. */
int32_t ssi_getppid(void) SSI_IMPORT(getppid);
/* The process group of pid (0: the caller). */
int32_t ssi_getpgid(int32_t pid) SSI_IMPORT(getpgid);
/* The session of pid (0: the caller). */
int32_t ssi_getsid(int32_t pid) SSI_IMPORT(getsid);
/* Sends signal to a pid, to a group as -pgid, or to the caller's group (0);
 * signal 0 only checks that the target exists. Returns 0. */
int32_t ssi_kill(int32_t target, int32_t signal) SSI_IMPORT(kill);

#endif
