# SPDX-License-Identifier: MIT
# bash completion for vmclient(1). Commands are read from `vmclient --help`,
# so new commands (agent, describe) complete without a change here.

_vmclient_commands() {
        "$1" --help 2>/dev/null | awk '/^Commands:/ { f = 1; next }
                f && /^  [a-z]/ { print $1 } f && /^$/ { exit }'
}

_vmclient() {
        local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
        local prog=${COMP_WORDS[0]}
        local global_opts="-s --server -t --token -j --json --timeout -h --help -V --version"

        case $prev in
        -s|--server|-t|--token|--timeout|--ram|--cpu|--disk|--limit|--after)
                return
                ;;
        esac

        local i cmd=""
        for ((i = 1; i < COMP_CWORD; i++)); do
                case ${COMP_WORDS[i]} in
                -s|--server|-t|--token|--timeout) ((i++)) ;;
                -*) ;;
                *) cmd=${COMP_WORDS[i]}; break ;;
                esac
        done

        if [[ -z $cmd ]]; then
                if [[ $cur == -* ]]; then
                        COMPREPLY=($(compgen -W "$global_opts" -- "$cur"))
                else
                        COMPREPLY=($(compgen -W "$(_vmclient_commands "$prog")" -- "$cur"))
                fi
                return
        fi

        local opts="" args=""
        local paging="--limit --after --all-pages --single-page"
        case $cmd in
        register|add) opts="--ram --cpu --disk" ;;
        update)   opts="--ram --cpu --disk --no-disks" ;;
        list)     opts=$paging; args="connected authorized all" ;;
        disks)    opts=$paging ;;
        help)     args=$(_vmclient_commands "$prog") ;;
        esac
        if [[ $cur == -* ]]; then
                COMPREPLY=($(compgen -W "$opts $global_opts" -- "$cur"))
        else
                COMPREPLY=($(compgen -W "$args" -- "$cur"))
        fi
}
complete -F _vmclient vmclient
