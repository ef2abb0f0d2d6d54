// Writes invalid UTF-8 and NUL bytes to stdout, then to stderr, then to stdout again.
#include <unistd.h>

int main() {
    const char out1[] = {'a', '\xff', '\0', '\xc3', '(', '\n'};
    const char err[] = {'\xed', '\xa0', '\x80', '\0', 'b', '\n'};
    const char out2[] = {'\xf8', '\x88', '\x80', '\x80', '\x80', '\0', '\n'};
    if (::write(1, out1, sizeof out1) < 0) {
        return 1;
    }
    ::usleep(50'000);
    if (::write(2, err, sizeof err) < 0) {
        return 1;
    }
    ::usleep(50'000);
    if (::write(1, out2, sizeof out2) < 0) {
        return 1;
    }
    return 0;
}
