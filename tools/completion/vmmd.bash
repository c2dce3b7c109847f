# SPDX-License-Identifier: MIT
# bash completion for vmmd(8); the options are read from `vmmd --help`.

_vmmd() {
        local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}

        case $prev in
        --state-dir)
                COMPREPLY=($(compgen -d -- "$cur"))
                return
                ;;
        --config|--admin-socket)
                COMPREPLY=($(compgen -f -- "$cur"))
                return
                ;;
        --log-level)
                COMPREPLY=($(compgen -W "err warning notice info debug" -- "$cur"))
                return
                ;;
        --registration)
                COMPREPLY=($(compgen -W "open closed approval" -- "$cur"))
                return
                ;;
        --admin-group)
                COMPREPLY=($(compgen -g -- "$cur"))
                return
                ;;
        --listen|--session-ttl|--idle-timeout|--max-*|--auth-failures-per-minute|\
        --sessions-per-vm|--map-size-max|--hash-workers|--*-timeout|--*-per-*)
                return
                ;;
        esac
        local opts
        opts=$("${COMP_WORDS[0]}" --help 2>/dev/null | grep -o -- '--[a-z][a-z0-9-]*' | sort -u)
        COMPREPLY=($(compgen -W "$opts -h -V" -- "$cur"))
}
complete -F _vmmd vmmd
