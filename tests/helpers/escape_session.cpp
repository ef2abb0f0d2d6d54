// Forks a grandchild that starts its own session (leaving the step's process group) and
// sleeps; writes its pid to argv[1]; exits 0. stdout and stderr of the grandchild go to
// /dev/null so that only the orphan handling, not the drain, ends it.
#include <cstdio>

#include <fcntl.h>
#include <unistd.h>

int main(int argc, char** argv) {
    if (argc < 2) {
        return 2;
    }
    int ready[2];
    if (::pipe(ready) != 0) {
        return 1;
    }
    const pid_t child = ::fork();
    if (child < 0) {
        return 1;
    }
    if (child == 0) {
        ::setsid();
        const int null = ::open("/dev/null", O_WRONLY);
        ::dup2(null, 1);
        ::dup2(null, 2);
        ::close(ready[1]);
        while (true) {
            ::pause();
        }
    }
    ::close(ready[1]);
    char byte = 0;
    // EOF once the grandchild has left the session and closed its end.
    while (::read(ready[0], &byte, 1) > 0) {
    }
    std::FILE* out = std::fopen(argv[1], "w");
    if (out == nullptr) {
        return 1;
    }
    std::fprintf(out, "%d\n", static_cast<int>(child));
    std::fclose(out);
    return 0;
}
