// Prints each entry of /proc/self/fd as "fd target", one per line.
#include <cstdio>
#include <string>

#include <dirent.h>
#include <unistd.h>

int main() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr) {
        return 1;
    }
    while (const dirent* entry = ::readdir(dir)) {
        const std::string name = entry->d_name;
        if (name == "." || name == "..") {
            continue;
        }
        char target[4096];
        const std::string link = "/proc/self/fd/" + name;
        const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
        target[n < 0 ? 0 : n] = '\0';
        std::printf("%s %s\n", name.c_str(), target);
    }
    ::closedir(dir);
    return 0;
}
