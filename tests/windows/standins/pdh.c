/*
 * Stand-in pdh.dll, for the Wine end-to-end test only (tests/tests/windows_wine.rs).
 *
 * Why it exists: the sysinfo crate (CPU usage) calls PdhEnumObjectsA, which Wine 8 exports only
 * as a stub: calling it raises "unimplemented function pdh.dll.PdhEnumObjectsA" and the process
 * dies. Real Windows and Wine 9 implement it. This file never ships with mate; tests/src/wine.rs
 * builds it with mingw into a throwaway Wine prefix.
 *
 * Only PdhEnumObjectsA is implemented here; every other export is forwarded (pdh.def) to
 * pdh_wine.dll, a copy of Wine's own builtin pdh.dll placed beside this one, so the counters
 * sysinfo reads still come from Wine.
 *
 * sysinfo calls it only to refresh the performance object cache (bRefresh = TRUE, no buffer):
 * answering "nothing listed, success" is what matters.
 */
#include <windows.h>

#define PDH_CSTATUS_VALID_DATA 0x00000000L
#define PDH_MORE_DATA 0x800007D2L

LONG WINAPI PdhEnumObjectsA(LPCSTR source, LPCSTR machine, LPSTR list, LPDWORD size,
                            DWORD detail, BOOL refresh)
{
    (void)source;
    (void)machine;
    (void)detail;
    (void)refresh;
    if (size == NULL)
        return PDH_CSTATUS_VALID_DATA;
    /* An empty MULTI_SZ list: two NULs. */
    if (list == NULL || *size < 2) {
        *size = 2;
        return list == NULL ? PDH_CSTATUS_VALID_DATA : PDH_MORE_DATA;
    }
    list[0] = '\0';
    list[1] = '\0';
    *size = 2;
    return PDH_CSTATUS_VALID_DATA;
}
