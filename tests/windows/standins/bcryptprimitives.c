/*
 * Stand-in bcryptprimitives.dll, for the Wine end-to-end test only (tests/tests/windows_wine.rs).
 *
 * Why it exists: Rust's std (1.78 and later) gets its random bytes (HashMap keys) from
 * ProcessPrng in bcryptprimitives.dll. Wine 8 has no bcryptprimitives.dll at all, so mate.exe
 * does not even load there. Real Windows (8 and later) and Wine 9 have it; this file never
 * ships with mate, it is built with mingw into a throwaway Wine prefix by tests/src/wine.rs.
 *
 * ProcessPrng(PBYTE, SIZE_T) -> BOOL is served by RtlGenRandom (advapi32's SystemFunction036),
 * which Wine 8 has.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a ULONG length: fill larger requests in pieces. */
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
