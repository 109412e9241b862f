# Shared by the bench scripts: source it after setting REPO (and, for
# ensure_tree, TREE, GEN_TREE and VARIANT), and after defining say and die.
# shellcheck shell=bash

# Percent of all CPUs busy over 2 s, from /proc/stat.
cpu_busy() {
  local a b
  a=$(head -n 1 /proc/stat)
  sleep 2
  b=$(head -n 1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    n = split(a, x); split(b, y)
    for (i = 2; i <= n; i++) { d = y[i] - x[i]; t += d; if (i == 5 || i == 6) idle += d }
    printf "%.0f", t ? 100 * (t - idle) / t : 0 }'
}

# Make the $VARIANT tree at $TREE with gen_tree.sh unless it is there, and
# refuse a tree that was edited since (gen_tree pins every mtime).
ensure_tree() {
  if [[ ! -d $TREE ]]; then
    [[ -f $GEN_TREE ]] || die "gen_tree.sh not found at $GEN_TREE (set GEN_TREE=)"
    echo "making the $VARIANT tree in $TREE (once)"
    rm -rf "$TREE.partial"
    bash "$GEN_TREE" "$VARIANT" "$TREE.partial"
    mv "$TREE.partial" "$TREE"
  fi
  local changed
  if changed=$(find "$TREE" -newermt @1700000000 -print -quit) && [[ -n $changed ]]; then
    die "$changed was modified after gen_tree made $TREE; delete $TREE to have it regenerated"
  fi
}

# Use $DROVER if given, else build the release binary; sets BUILT=yes|no
# (read by the scripts that source this).
# shellcheck disable=SC2034
build_drover() {
  if [[ -z ${DROVER:-} ]]; then
    say "building drover (release)"
    (cd "$REPO" && cargo build --release -p drover)
    DROVER=$REPO/target/release/drover
    BUILT=yes
  else
    BUILT=no
  fi
  [[ -x $DROVER ]] || die "drover binary $DROVER not found"
}
