# ferry stage1: find a safe directory, reuse a verified cached bridge or receive one, run it.
#
# Invoked as: sh -c STAGE1 NAME NONCE ARCH=SHA256...
# Every line it prints starts with "ferry-NONCE ", so login-script noise cannot pass for it:
#   hello ARCH cached TOOLS DIR      a verified cached bridge runs next (no reply wanted)
#   hello ARCH need TOOLS            waiting for a 32-byte header "send SIZE CODEC" (padded with
#                                    spaces, then a newline) and exactly SIZE bytes; the
#                                    directory is chosen while they travel
#   ok DIR                           the received bridge verified and runs next
#   fail REASON DETAIL...            nothing was run; REASON is arch, tool, dir, space, io,
#                                    corrupt, tampered or proto
# After "cached" or "ok", only the bridge's frames follow.
#
# Safety: a directory is used (looked up, written, run from) only when the effective user owns it
# and every directory above it up to the first one owned by root, it is mode 0700, and nothing
# this run creates lands in a directory owned by another user. So nobody else can swap a file
# between its sha256 check and its exec. The bridge gets back the umask the hop gave the loader.
# The loader needs no /dev/null and no /proc (fd 4 stands in for /dev/null).
#
# This file is minified into one line (see stage1/src/script.rs): every command ends its line,
# lines ending in "then", "do", "else", "in", "{", "&&", "||", "|" or ";;" continue a command.
# No single quotes, backslashes or exclamation marks (but "#! ", which every shell leaves alone):
# login shells disagree about them.
# shellcheck disable=SC2015,SC2046,SC2086,SC2174 # a && b || c, and word splitting, are meant.
w=$(umask)
umask 077
if [ -c /dev/null ] && [ -w /dev/null ]; then exec 4>/dev/null; else exec 4>&2; fi
n=$1
shift
m="ferry-$n"
say() { echo "$m $*"; }
fail() { say fail "$@"; exit 1; }
t=
for x in zstd gzip sha256sum shasum openssl uname dd wc ls chmod mkdir mv rm; do
IFS=:
for p in $PATH; do
[ -x "$p/$x" ] && t="$t$x," && break
done
unset IFS
done
has() { case ,$t in *,$1,*) ;; *) return 1 ;; esac; }
has uname || fail tool uname
a=$(uname -m)
case $a in
x86_64|amd64) a=x86_64 ;;
aarch64|arm64) a=aarch64 ;;
esac
h=
for p in "$@"; do
case $p in
"$a="*) h=${p#*=} ;;
esac
done
[ -n "$h" ] || fail arch "$a"
has sha256sum || has shasum || has openssl || fail tool sha256sum
sum() {
v=
if has sha256sum; then v=$(sha256sum "$1"); elif has shasum; then v=$(shasum -a 256 "$1"); else v=$(openssl dgst -sha256 -r "$1"); fi
v=${v%% *}
}
own() {
has ls || fail tool ls
set -- $(ls -ldn "$1" 2>&4)
o=$3
}
safe() {
p=$1
while [ -n "$p" ]; do
if [ -L "$p" ]; then
own "$p"
[ "$o" = 0 ] || [ "$o" = "$u" ] || return 1
fi
if [ -O "$p" ]; then p=${p%/*}; else own "$p/"; [ "$o" = 0 ]; return; fi
done
}
u=$(id -u 2>&4)
r=${XDG_RUNTIME_DIR:+$XDG_RUNTIME_DIR/ferry}
x=${XDG_CACHE_HOME:-${HOME:+$HOME/.cache}}
set -- "${x:+$x/ferry}" "$r" "${u:+/dev/shm/ferry-$u}" "${u:+/tmp/ferry-$u}" "${u:+/var/tmp/ferry-$u}"
for c in "$@"; do
f="$c/$h"
case $c in /?*) ;; *) continue ;; esac
[ -f "$f" ] && safe "$c" && [ -O "$c" ] && chmod 700 "$c" 2>&4 || continue
sum "$f"
if [ "$v" = "$h" ]; then
say hello "$a" cached "$t" "$c"
umask "$w"
exec "$f" 4>&-
fi
rm -f "$f"
fail tampered "$f"
done
for x in dd chmod mkdir mv rm; do
has $x || fail tool $x
done
has wc || has ls || fail tool wc
say hello "$a" need "$t"
drop() {
x=$1
while [ -n "$e" ]; do
[ "$x" = "$e" ] && return
rmdir "$x" 2>&4 || return
x=${x%/*}
done
}
d=
y=
for c in "$@"; do
case $c in /?*) ;; *) continue ;; esac
y="$y $c"
e=
if [ -d "$c" ]; then
safe "$c" && [ -O "$c" ] && chmod 700 "$c" 2>&4 || continue
else
e=${c%/*}
while [ -n "$e" ] && [ ! -d "$e" ]; do e=${e%/*}; done
e=${e:-/}
safe "$e" && mkdir -p -m 700 "$c" 2>&4 && safe "$c" || continue
fi
x="$c/.probe-$n"
echo "#! /bin/sh" > "$x" 2>&4 && chmod 700 "$x" 2>&4 && "$x" 2>&4 && d=$c
rm -f "$x"
[ -n "$d" ] && break
drop "$c"
done
[ -n "$d" ] || fail dir "$y"
f="$d/$h"
g="$d/.$h.$n"
i=$g.h
give() { rm -f "$g" "$i"; drop "$d"; fail "$@"; }
size() {
if has wc; then k=$(wc -c < "$1"); else set -- $(ls -ln "$1"); k=$5; fi
k=$((k + 0))
}
take() {
l=0
while [ "$l" -lt "$1" ]; do
o=$(LC_ALL=C dd bs=$(($1 - l)) count=1 2>&1 >> "$i") && q=0 || q=1
size "$i"
[ "$k" -gt "$l" ] && l=$k && continue
[ $q = 1 ] || give corrupt "$l/$1"
case $o in
*emporar*) sleep 0.01 2>&4 || sleep 1 ;;
*pace*) give space "$d" ;;
*) give io $o ;;
esac
done
}
take 32
read -r c s z < "$i"
[ "$c" = send ] || give proto "$c"
rm -f "$i"
case $z in
zstd) i=$g.zst ;;
gzip) i=$g.gz ;;
*) i=$g ;;
esac
take "$s"
case $z in
zstd) o=$(LC_ALL=C zstd -dq --rm "$i" 2>&1) ;;
gzip) o=$(LC_ALL=C gzip -d "$i" 2>&1) ;;
esac
case $o in *pace*) give space "$d" ;; esac
sum "$g"
[ "$v" = "$h" ] || give corrupt "$l/$s"
chmod 700 "$g" && mv -f "$g" "$f" || give dir "$d"
say ok "$d"
umask "$w"
exec "$f" 4>&-
