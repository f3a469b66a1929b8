/* A C guest that works for a while, for moving it at random moments:
 * `cwork ROUNDS [DIR]`. Each round sorts doubles with qsort (calls through a
 * function pointer), builds and walks a binary tree with malloc'd nodes and a
 * stack array per frame, recurses, prints a line, and appends one to
 * DIR/cwork.log; at the end it reads the log back and prints its hash. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static unsigned long fib(int n) { return n < 2 ? (unsigned long)n : fib(n - 1) + fib(n - 2); }

struct node { struct node *l, *r; int v; };

static struct node *insert(struct node *t, int v) {
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) abort();
        t->v = v;
        return t;
    }
    if (v < t->v) t->l = insert(t->l, v);
    else t->r = insert(t->r, v);
    return t;
}

static long walk(const struct node *t, int depth) {
    char pad[64];
    if (!t) return 0;
    memset(pad, depth & 0x7f, sizeof pad);
    return t->v + walk(t->l, depth + 1) + walk(t->r, depth + 1) + pad[depth % 64];
}

static void release(struct node *t) {
    if (t) {
        release(t->l);
        release(t->r);
        free(t);
    }
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 10;
    const char *dir = argc > 2 ? argv[2] : "/sandbox";
    char path[512];
    snprintf(path, sizeof path, "%s/cwork.log", dir);
    FILE *log = fopen(path, "w");
    if (!log) { perror("open the log"); return 3; }
    unsigned s = 1;
    for (int r = 0; r < rounds; r++) {
        int n = 20000;
        double *a = malloc(n * sizeof *a);
        if (!a) abort();
        for (int i = 0; i < n; i++) { s = s * 1103515245u + 12345u; a[i] = sin((double)(s % 100000)) * 1000.0; }
        qsort(a, n, sizeof *a, by_value);
        struct node *t = NULL;
        for (int i = 0; i < 3000; i++) { s = s * 1103515245u + 12345u; t = insert(t, (int)(s % 100000)); }
        long sum = walk(t, 0);
        release(t);
        printf("round %d: median %.6f tree %ld fib %lu\n", r, a[n / 2], sum, fib(18 + r % 5));
        fprintf(log, "round %d %.3f\n", r, a[n / 3]);
        free(a);
    }
    fclose(log);
    log = fopen(path, "r");
    if (!log) { perror("reopen the log"); return 4; }
    char line[256];
    unsigned long h = 5381;
    int lines = 0;
    while (fgets(line, sizeof line, log)) {
        for (const char *p = line; *p; p++) h = h * 33 + (unsigned char)*p;
        lines++;
    }
    fclose(log);
    printf("log: %d lines, hash %lu\n", lines, h);
    return 7;
}
