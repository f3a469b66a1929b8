/* The ssi host API for C programs built for wasm32-wasi: process identity,
 * signals, children and groups, cluster-wide. Each function returns a value,
 * or a negated WASI errno (-71 is ESRCH, -28 EINVAL, -58 ENOTSUP, -12 ECHILD,
 * -63 EPERM). See src/lib.rs for the table and the details. */
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

/* A (pointer, length) string, for argv and envp. */
typedef struct { const char *ptr; uint32_t len; } ssi_str;
/* A descriptor of the child (child) and the caller's one it is (own). */
typedef struct { uint32_t child; uint32_t own; } ssi_fd;

/* Starts a child: module is a path under a preopened directory (len 0: the
 * caller's own module); nfds 0 gives it all of the caller's descriptors; its
 * body starts on node (0: the home). Returns its pid. */
int32_t ssi_spawn(const char *module, uint32_t module_len, const ssi_str *argv,
                  uint32_t argc, const ssi_str *envp, uint32_t envc,
                  const ssi_fd *fds, uint32_t nfds, int32_t node) SSI_IMPORT(spawn);

#define SSI_WNOHANG 1
#define SSI_WUNTRACED 2
#define SSI_WCONTINUED 8
/* Waits for a child (pid, -1 any, 0 the caller's group, -pgid a group) to
 * change state; its pid (0 with SSI_WNOHANG if none has), its status word
 * (POSIX's: WIFEXITED and the others apply) at *status unless null. */
int32_t ssi_waitpid(int32_t target, uint32_t *status, int32_t options) SSI_IMPORT(waitpid);
/* Puts pid (0: the caller) into group pgid (0: pid). Returns 0. */
int32_t ssi_setpgid(int32_t pid, int32_t pgid) SSI_IMPORT(setpgid);
/* The caller leads a new session and group; returns its id. */
int32_t ssi_setsid(void) SSI_IMPORT(setsid);

#define SSI_SIG_DFL 0
#define SSI_SIG_IGN 1
#define SSI_SIG_HANDLE 2
/* What signal does: SSI_SIG_DFL, SSI_SIG_IGN, or SSI_SIG_HANDLE to run the
 * exported function named by handler (void (int32_t)), e.g. one declared with
 * __attribute__((export_name("on_signal"))). Returns the previous action. */
int32_t ssi_sigaction(int32_t signal, int32_t action, const char *handler,
                      uint32_t len) SSI_IMPORT(sigaction);
#define SSI_SIG_BLOCK 0
#define SSI_SIG_UNBLOCK 1
#define SSI_SIG_SETMASK 2
/* Blocks, unblocks or sets the signals of set (bit n - 1 for signal n);
 * returns the previous mask. */
int32_t ssi_sigprocmask(int32_t how, int32_t set) SSI_IMPORT(sigprocmask);

#endif
