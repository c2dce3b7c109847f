# SPDX-License-Identifier: MIT
# bash completion for vmadm(8). Commands and options are read from
# `vmadm --help`, so new commands complete without a change here; VM ids and
# connection ids come from the daemon (when it answers).

_vmadm_commands() {
        "$1" --help 2>/dev/null | awk '/^Commands:/ { f = 1; next }
                f && /^  [a-z]/ { print $1 } f && /^$/ { exit }'
}

# The words of a table's first column, skipping its header (and "(no VMs)").
_vmadm_column() {
        "${@}" --no-color 2>/dev/null | awk 'NR > 1 && $1 !~ /^\(/ { print $1 }'
}

_vmadm() {
        local cur prev words cword
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        local prog=${COMP_WORDS[0]}
        local global_opts="-s --socket -j --json --no-color --timeout -h --help -V --version"

        case $prev in
        -s|--socket)
                COMPREPLY=($(compgen -f -- "$cur"))
                return
                ;;
        --timeout|--limit)
                return
                ;;
        esac

        # the command is the first word that is not an option or its value
        local i cmd="" sock=()
        for ((i = 1; i < COMP_CWORD; i++)); do
                case ${COMP_WORDS[i]} in
                -s|--socket) sock=(--socket "${COMP_WORDS[i+1]}"); ((i++)) ;;
                --timeout) ((i++)) ;;
                -*) ;;
                *) cmd=${COMP_WORDS[i]}; break ;;
                esac
        done

        if [[ -z $cmd ]]; then
                if [[ $cur == -* ]]; then
                        COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
                else
                        COMPREPLY=($(compgen -W "$(_vmadm_commands "$prog")" -- "$cur"))
                fi
                return
        fi

        local opts="" args=""
        case $cmd in
        list)     opts="--limit"; args="connected authorized all" ;;
        disks|clients) opts="--limit" ;;
        sessions) opts="--limit"; args=$(_vmadm_column "$prog" "${sock[@]}" list) ;;
        show|delete) args=$(_vmadm_column "$prog" "${sock[@]}" list) ;;
        create)   opts="--password-stdin" ;;
        passwd)   opts="--password-stdin"; args=$(_vmadm_column "$prog" "${sock[@]}" list) ;;
        revoke)
                if [[ $prev == --session ]]; then
                        COMPREPLY=($(compgen -W "$(_vmadm_column "$prog" "${sock[@]}" sessions)" -- "$cur"))
                        return
                fi
                opts="--session"; args=$(_vmadm_column "$prog" "${sock[@]}" list) ;;
        kick)     args=$(_vmadm_column "$prog" "${sock[@]}" clients) ;;
        backup)
                opts="--force"
                if [[ $cur != -* ]]; then
                        COMPREPLY=($(compgen -f -- "$cur"))
                        return
                fi
                ;;
        help)     args=$(_vmadm_commands "$prog") ;;
        esac
        if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "$opts $global_opts" -- "$cur"))
        else
                COMPREPLY=($(compgen -W "$args" -- "$cur"))
        fi
}
complete -F _vmadm vmadm
