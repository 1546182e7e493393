%%% @doc Safely unpacking a tarball: the tar part of the `release' and `hex'
%%% source types ({@link bc_gitops_release}, {@link bc_gitops_hex}).
%%%
%%% {@link unpack/3} lists the archive (gzip-compressed or plain tar) before
%%% extracting anything and refuses it (`{unsafe_entry, Name, Why}') if any
%%% entry has an absolute name, a `..' component, is a device, a FIFO or of
%%% a type that tar tools do not agree on (GNU sparse files...), lies below a
%%% symbolic link of the archive, or is a link whose target is
%%% absolute, leaves the archive's root, or passes through another symbolic
%%% link. Hard links must name an earlier regular file of the archive; they
%%% are unpacked as hard links to it. The entries' data may hold at most
%%% `MaxUnpacked' bytes (`{too_large_unpacked, MaxUnpacked}'), checked from
%%% the headers before the data is read, and the headers of one entry at
%%% most 1 MiB. The archive is then extracted into a fresh staging directory
%%% and what was written is checked again on disk.
%%%
%%% The archive is read by the Rust `tar' and `flate2' crates in the NIF
%%% (`bc_gitops_nif:tar_list/2' and `tar_unpack/3', on a dirty IO
%%% scheduler); this module holds the policy. Not `erl_tar': its listing
%%% gives no link targets, and its extraction resolves a symbolic link's
%%% target from the root instead of the link's directory (refusing
%%% `bin/x -> ../lib/y'), skips hard links and writes devices as empty
%%% files, so it needed a second, hand-written header parser beside it.
%%% With one parser for the listing and the writing, what was checked is
%%% what gets written.
%%%
%%% Errors: `{unsafe_entry, Name, Why}', `{too_large_unpacked, Max}',
%%% `{bad_archive, Reason}', `{file_error, Op, Path, Reason}'.
-module(bc_gitops_tar).

-include_lib("kernel/include/file.hrl").

-export([unpack/3]).

%% One entry of the archive.
-record(entry, {
    %% The name as stored in the archive (after GNU/pax long names).
    raw :: binary(),
    %% Its components, `.' and empty ones dropped.
    path :: [binary()],
    type :: regular | directory | symlink | link | char | block | fifo | {unsupported, byte()},
    %% symlink/link: the target as stored.
    target :: binary() | undefined
}).

%% @doc Checks the tarball `Tarball' and unpacks it into `Staging', which
%% must not exist yet (its parent must). On error `Staging' may be left
%% partly written; the caller removes it.
-spec unpack(Tarball :: file:filename(), Staging :: file:filename(),
             MaxUnpacked :: pos_integer()) -> ok | {error, term()}.
unpack(Tarball, Staging, MaxUnpacked) ->
    try
        Entries = case bc_gitops_nif:tar_list(to_bin(Tarball), MaxUnpacked) of
                      {ok, Listed} ->
                          [#entry{raw = Raw, path = split(Raw), type = Type, target = Target}
                           || {Raw, Type, Target} <- Listed];
                      {error, Why} ->
                          fail(Why)
                  end,
        check_entries(Entries),
        case file:make_dir(Staging) of
            ok -> ok;
            {error, Why1} -> fail({file_error, mkdir, Staging, Why1})
        end,
        case bc_gitops_nif:tar_unpack(to_bin(Tarball), to_bin(Staging), MaxUnpacked) of
            ok -> ok;
            {error, Why2} -> fail(Why2)
        end,
        check_tree(Staging)
    catch
        throw:{?MODULE, Why3} -> {error, Why3}
    end.

-spec fail(term()) -> no_return().
fail(Why) ->
    throw({?MODULE, Why}).

%%====================================================================
%% Checking the entries
%%====================================================================

-spec check_entries([#entry{}]) -> ok.
check_entries(Entries) ->
    Symlinks = maps:from_list([{P, true} || #entry{type = symlink, path = P} <- Entries]),
    Counts = lists:foldl(fun(#entry{path = P}, Acc) -> maps:update_with(P, fun(N) -> N + 1 end,
                                                                        1, Acc) end,
                         #{}, Entries),
    _ = lists:foldl(fun(E, Seen) -> check_entry(E, Symlinks, Counts, Seen) end, #{}, Entries),
    ok.

%% Seen: the regular files met so far, which hard links may name.
-spec check_entry(#entry{}, map(), map(), map()) -> map().
check_entry(#entry{raw = Raw, path = Path, type = Type, target = Target}, Symlinks, Counts,
            Seen) ->
    binary:match(Raw, <<"/">>) =:= {0, 1} andalso unsafe(Raw, absolute_path),
    lists:member(<<"..">>, Path) andalso unsafe(Raw, parent_reference),
    (Path =:= [] andalso Type =/= directory) andalso unsafe(Raw, empty_name),
    lists:member(Type, [char, block, fifo]) andalso unsafe(Raw, {special_file, Type}),
    is_tuple(Type) andalso unsafe(Raw, {unsupported_type, element(2, Type)}),
    case through_symlink(Path, Symlinks) of
        false -> ok;
        Prefix -> unsafe(Raw, {below_symlink, join(Prefix)})
    end,
    IsLink = Type =:= symlink orelse Type =:= link,
    IsSymlink = fun(P) -> maps:is_key(P, Symlinks) end,
    (IsLink andalso maps:get(Path, Counts) > 1) andalso unsafe(Raw, duplicate_link),
    case Type of
        symlink ->
            case link_target(lists:droplast(Path), Target, IsSymlink) of
                {ok, _} -> Seen;
                {error, Why} -> unsafe(Raw, Why)
            end;
        link ->
            %% Hard-link names are relative to the archive's root.
            case link_target([], Target, IsSymlink) of
                {ok, Resolved} ->
                    maps:is_key(Resolved, Seen)
                        orelse unsafe(Raw, {hard_link_target, Target}),
                    Seen;
                {error, Why} ->
                    unsafe(Raw, Why)
            end;
        regular ->
            Seen#{Path => true};
        _ ->
            Seen
    end.

-spec unsafe(binary(), term()) -> no_return().
unsafe(Raw, Why) ->
    fail({unsafe_entry, Raw, Why}).

%% The first strict prefix of Path that is a symbolic link, or false.
-spec through_symlink([binary()], map()) -> [binary()] | false.
through_symlink([], _Symlinks) ->
    false;
through_symlink(Path, Symlinks) ->
    Prefixes = [lists:sublist(Path, N) || N <- lists:seq(1, length(Path) - 1)],
    case [P || P <- Prefixes, maps:is_key(P, Symlinks)] of
        [] -> false;
        [First | _] -> First
    end.

%% Where a link found in directory Dir (components from the root) points,
%% resolved without leaving the root and without passing through another
%% symbolic link (IsSymlink says which paths are).
-spec link_target([binary()], binary() | undefined, fun(([binary()]) -> boolean())) ->
          {ok, [binary()]} | {error, term()}.
link_target(_Dir, Target, _IsSymlink) when Target =:= undefined; Target =:= <<>> ->
    {error, empty_link};
link_target(_Dir, <<"/", _/binary>> = Target, _IsSymlink) ->
    {error, {absolute_link, Target}};
link_target(Dir, Target, IsSymlink) ->
    resolve(binary:split(Target, <<"/">>, [global]), lists:reverse(Dir), Target, IsSymlink).

-spec resolve([binary()], [binary()], binary(), fun(([binary()]) -> boolean())) ->
          {ok, [binary()]} | {error, term()}.
resolve([], Stack, _Target, _IsSymlink) ->
    {ok, lists:reverse(Stack)};
resolve([C | Rest], Stack, Target, IsSymlink) when C =:= <<>>; C =:= <<".">> ->
    resolve(Rest, Stack, Target, IsSymlink);
resolve([<<"..">> | _], [], Target, _IsSymlink) ->
    {error, {link_escapes, Target}};
resolve([<<"..">> | Rest], [_ | Stack], Target, IsSymlink) ->
    resolve(Rest, Stack, Target, IsSymlink);
resolve([C | Rest], Stack, Target, IsSymlink) ->
    New = [C | Stack],
    case Rest =/= [] andalso IsSymlink(lists:reverse(New)) of
        true -> {error, {link_through_symlink, Target}};
        false -> resolve(Rest, New, Target, IsSymlink)
    end.

-spec join([binary()]) -> binary().
join(Path) ->
    iolist_to_binary(lists:join(<<"/">>, Path)).

-spec split(binary()) -> [binary()].
split(Name) ->
    [C || C <- binary:split(Name, <<"/">>, [global]), C =/= <<>>, C =/= <<".">>].

%%====================================================================
%% Checking what was written
%%====================================================================

%% What was written, checked again on disk: only directories, regular files
%% and symbolic links that stay inside.
-spec check_tree(file:filename()) -> ok.
check_tree(Root) ->
    check_tree(Root, []).

-spec check_tree(file:filename(), [binary()]) -> ok.
check_tree(Root, Rel) ->
    Dir = filename:join([Root | Rel]),
    Names = case file:list_dir_all(Dir) of
                {ok, Ns} -> lists:sort(Ns);
                {error, Why0} -> fail({file_error, list_dir, Dir, Why0})
            end,
    lists:foreach(
      fun(Name) ->
              Path = Rel ++ [to_bin(Name)],
              Full = filename:join([Root | Path]),
              case file:read_link_info(Full, [raw]) of
                  {ok, #file_info{type = directory}} ->
                      check_tree(Root, Path);
                  {ok, #file_info{type = regular}} ->
                      ok;
                  {ok, #file_info{type = symlink}} ->
                      Target = case file:read_link_all(Full) of
                                   {ok, T} -> to_bin(T);
                                   {error, Why1} -> fail({file_error, read_link, Full, Why1})
                               end,
                      IsSymlink = fun(P) -> is_symlink(filename:join([Root | P])) end,
                      case link_target(Rel, Target, IsSymlink) of
                          {ok, _} -> ok;
                          {error, Why2} -> fail({unsafe_entry, join(Path), Why2})
                      end;
                  {ok, #file_info{type = Type}} ->
                      fail({unsafe_entry, join(Path), {special_file, Type}});
                  {error, Why3} ->
                      fail({file_error, stat, Full, Why3})
              end
      end, Names).

-spec is_symlink(file:filename_all()) -> boolean().
is_symlink(Path) ->
    case file:read_link_info(Path, [raw]) of
        {ok, #file_info{type = symlink}} -> true;
        _ -> false
    end.

-spec to_bin(file:filename_all()) -> binary().
to_bin(Name) when is_binary(Name) -> Name;
to_bin(Name) ->
    case unicode:characters_to_binary(Name, unicode, file:native_name_encoding()) of
        B when is_binary(B) -> B;
        _ -> fail({bad_archive, {bad_file_name, Name}})
    end.
