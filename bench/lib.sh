# Shared by the bench scripts; sourced from the repository root.

# need_packages installs, from Debian's packages, what a benchmark needs and
# the machine lacks. Each argument is COMMAND=PACKAGE: PACKAGE is installed
# when COMMAND (a name looked up on PATH, or an absolute path) is missing.
need_packages() {
	local arg cmd need=()
	for arg in "$@"; do
		cmd=${arg%%=*}
		if [[ $cmd == /* ]]; then
			[ -x "$cmd" ] && continue
		else
			command -v "$cmd" >/dev/null && continue
		fi
		need+=("${arg#*=}")
	done
	if [ ${#need[@]} -gt 0 ]; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	fi
}

# measure NAME CMD...: runs CMD with its output in $WORK/out.NAME and sets
# T[NAME] to its wall seconds and R[NAME] to its peak RSS in KiB (the caller
# declares `declare -A T R`). A failing CMD ends the script with its output.
measure() {
	local name=$1
	shift
	/usr/bin/time -f '%e %M' -o "$WORK/time.$name" "$@" >"$WORK/out.$name" 2>&1 || {
		echo "$name failed:"
		cat "$WORK/out.$name"
		exit 1
	}
	read -r T[$name] R[$name] <"$WORK/time.$name"
}
