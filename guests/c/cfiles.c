/* A C guest (wasi-libc): stdio, files, directories, stat, and an exit status. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    const char *root = argc > 1 ? argv[1] : "/sandbox";
    char path[512];
    printf("hello from C, %d args\n", argc);
    snprintf(path, sizeof path, "%s/c.txt", root);
    FILE *f = fopen(path, "w+");
    if (!f) { perror("fopen"); return 10; }
    for (int i = 0; i < 100; i++) fprintf(f, "line %d\n", i);
    fseek(f, 0, SEEK_SET);
    char line[64];
    fgets(line, sizeof line, f);
    printf("first line: %s", line);
    printf("size: %ld\n", (fseek(f, 0, SEEK_END), ftell(f)));
    fclose(f);
    snprintf(path, sizeof path, "%s/cdir", root);
    if (mkdir(path, 0755) != 0) printf("mkdir: %s\n", strerror(errno));
    struct stat st;
    printf("stat cdir: %d, is dir: %d\n", stat(path, &st), S_ISDIR(st.st_mode));
    char from[512], to[512];
    snprintf(from, sizeof from, "%s/c.txt", root);
    snprintf(to, sizeof to, "%s/cdir/renamed.txt", root);
    printf("rename: %d\n", rename(from, to));
    printf("open missing: %s\n", fopen(from, "r") ? "found" : strerror(errno));
    DIR *d = opendir(root);
    char *names[64];
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && n < 64) names[n++] = strdup(e->d_name);
    if (d) closedir(d);
    qsort(names, n, sizeof *names, cmp);
    for (int i = 0; i < n; i++) printf("entry: %s\n", names[i]);
    printf("unlink: %d\n", unlink(to));
    printf("rmdir: %d\n", rmdir(path));
    /* A log opened as shells and loggers do: created, emptied, appended to. */
    snprintf(path, sizeof path, "%s/c.log", root);
    for (int round = 0; round < 2; round++) {
        int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND, 0644);
        if (fd < 0) { printf("open append+trunc: %s\n", strerror(errno)); break; }
        write(fd, "one\n", 4);
        lseek(fd, 0, SEEK_SET);
        write(fd, "two\n", 4);
        close(fd);
    }
    if (stat(path, &st) == 0) printf("c.log: %lld bytes\n", (long long)st.st_size);
    fprintf(stderr, "C guest done\n");
    return 3;
}
