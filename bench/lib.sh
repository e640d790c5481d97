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
