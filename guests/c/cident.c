/* The ssi host API from C: identity, then SIGTERM to itself (status 143). */
#include <stdio.h>
#include "ssi.h"

int main(void) {
    int32_t pid = ssi_getpid();
    printf("pid>0: %d\n", pid > 0);
    printf("pgid==pid: %d\n", ssi_getpgid(0) == pid);
    printf("sid==pid: %d\n", ssi_getsid(0) == pid);
    printf("ppid: %d\n", ssi_getppid());
    printf("kill nobody: %d\n", ssi_kill(pid + 1000, 15));
    fflush(stdout);
    ssi_kill(pid, 15);
    for (;;) {
        printf("still here\n");
        fflush(stdout);
    }
}
