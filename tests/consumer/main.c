/* Calls into an installed libkestrel.a through the public C API only.
 * Exit 0 when the library answers sensibly, 1 otherwise. */
#include <stdio.h>
#include <string.h>

#include <kestrel/kestrel.h>

int main(void) {
  const char* version = kestrel_version();
  const char* info = kestrel_system_info();
  if (version == NULL || info == NULL) {
    fprintf(stderr, "consumer: kestrel returned NULL\n");
    return 1;
  }
  printf("kestrel_version: %s\nkestrel_system_info: %s\n", version, info);
#ifdef KESTREL_EXPECT_VERSION
  if (strcmp(version, KESTREL_EXPECT_VERSION) != 0) {
    fprintf(stderr, "consumer: library says %s, package says %s\n", version, KESTREL_EXPECT_VERSION);
    return 1;
  }
#endif
  if (strstr(info, version) == NULL || strstr(info, "selected:") == NULL) {
    fprintf(stderr, "consumer: system info lacks the version or the selected variant\n");
    return 1;
  }
  return 0;
}
