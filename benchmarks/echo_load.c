/* Closed-loop echo load: N connections, each sends SIZE bytes and waits for them back.
 * usage: echo_load HOST PORT CONNS SIZE SECONDS  -> prints round trips completed.
 * Written in C so that the load generator is never the bottleneck of a Python server. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: %s HOST PORT CONNS SIZE SECONDS\n", argv[0]); return 2; }
    int conns = atoi(argv[3]), size = atoi(argv[4]);
    double seconds = atof(argv[5]);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    inet_pton(AF_INET, argv[1], &addr.sin_addr);
    int ep = epoll_create1(0);
    int *got = calloc(conns, sizeof(int));
    char *msg = malloc(size), buf[65536];
    memset(msg, 'x', size);
    for (int i = 0; i < conns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("connect"); return 1; }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ((unsigned long)i << 32) | fd};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        if (write(fd, msg, size) != size) { perror("write"); return 1; }
    }
    long trips = 0;
    double end = now() + seconds;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 100);
        for (int k = 0; k < n; k++) {
            int fd = (int)(evs[k].data.u64 & 0xffffffff), i = (int)(evs[k].data.u64 >> 32);
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) { fprintf(stderr, "connection %d closed\n", i); return 1; }
            got[i] += r;
            while (got[i] >= size) {
                got[i] -= size;
                trips++;
                if (write(fd, msg, size) != size) { perror("write"); return 1; }
            }
        }
    }
    printf("%ld\n", trips);
    return 0;
}
