%%% @doc Reading and safely unpacking a release tarball: the tar part of the
%%% `release' source type ({@link bc_gitops_release}).
%%%
%%% {@link unpack/3} lists the archive (gzip-compressed or plain tar) before
%%% extracting anything and refuses it (`{unsafe_entry, Name, Why}') if any
%%% entry has an absolute name, a `..' component, is a device or a FIFO, lies
%%% below a symbolic link of the archive, or is a link whose target is
%%% absolute, leaves the archive's root, or passes through another symbolic
%%% link. Hard links must name an earlier regular file of the archive; they
%%% are unpacked as copies. The regular files may hold at most `MaxUnpacked'
%%% bytes once unpacked (`{too_large_unpacked, MaxUnpacked}').
%%%
%%% The listing is read twice, by this module (which parses the headers
%%% itself, GNU long names and pax headers included, and so sees link
%%% targets) and by `erl_tar', and the two must agree entry by entry. The
%%% archive is then extracted into a fresh staging directory and what was
%%% written is checked again on disk.
%%%
%%% Errors: `{unsafe_entry, Name, Why}', `{too_large_unpacked, Max}',
%%% `{bad_archive, Reason}', `{file_error, Op, Path, Reason}'.
-module(bc_gitops_tar).

-include_lib("kernel/include/file.hrl").

-export([unpack/3]).

-define(MAX_META, 1 bsl 20).

%% One entry of the archive, as this module reads it.
-record(entry, {
    %% The name as stored in the archive (after GNU/pax long names).
    raw :: binary(),
    %% Its components, `.' and empty ones dropped.
    path :: [binary()],
    type :: regular | directory | symlink | link | char | block | fifo,
    size :: non_neg_integer(),
    %% symlink/link: the target as stored.
    target :: binary() | undefined,
    %% The name as erl_tar reports it.
    tar_name = "" :: string()
}).

%% A reader over the (possibly gzip-compressed) tar stream.
-record(rd, {
    fd :: file:io_device(),
    z :: zlib:zstream() | undefined,
    %% undefined: plain tar; input: the inflater wants input; continue: it
    %% has more output for what it was given.
    zstate :: undefined | input | continue,
    buf = <<>> :: binary()
}).

%% @doc Checks the tarball `Tarball' and unpacks it into `Staging', which
%% must not exist yet (its parent must). On error `Staging' may be left
%% partly written; the caller removes it.
-spec unpack(Tarball :: file:filename(), Staging :: file:filename(),
             MaxUnpacked :: pos_integer()) -> ok | {error, term()}.
unpack(Tarball, Staging, MaxUnpacked) ->
    try
        Entries = list_archive(Tarball),
        check_entries(Entries, MaxUnpacked),
        extract(Tarball, Staging, Entries),
        check_tree(Staging)
    catch
        throw:{?MODULE, Why} -> {error, Why}
    end.

-spec fail(term()) -> no_return().
fail(Why) ->
    throw({?MODULE, Why}).

%%====================================================================
%% Reading the archive
%%====================================================================

%% Every entry of the archive, read by this module and cross-checked against
%% erl_tar's own listing.
-spec list_archive(file:filename()) -> [#entry{}].
list_archive(File) ->
    Entries = scan(File),
    Theirs = case erl_tar:table(File, [compressed, verbose]) of
                 {ok, T} -> T;
                 {error, Why} -> fail({bad_archive, {erl_tar, Why}})
             end,
    Mine = [{E#entry.path, E#entry.type} || E <- Entries],
    Other = [{split(tar_name(Name)), Type} || {Name, Type, _, _, _, _, _} <- Theirs],
    Mine =:= Other orelse fail({bad_archive, listings_disagree}),
    [E#entry{tar_name = Name} || {E, {Name, _, _, _, _, _, _}} <- lists:zip(Entries, Theirs)].

%% erl_tar's names are strings; compare them as UTF-8 bytes, as the archive
%% holds them.
-spec tar_name(string()) -> binary().
tar_name(Name) ->
    case unicode:characters_to_binary(Name) of
        B when is_binary(B) -> B;
        _ -> list_to_binary([C band 255 || C <- Name])
    end.

-spec split(binary()) -> [binary()].
split(Name) ->
    [C || C <- binary:split(Name, <<"/">>, [global]), C =/= <<>>, C =/= <<".">>].

-spec scan(file:filename()) -> [#entry{}].
scan(File) ->
    Fd = case file:open(File, [read, raw, binary]) of
             {ok, F} -> F;
             {error, Why} -> fail({file_error, open, File, Why})
         end,
    try
        Rd = case file:pread(Fd, 0, 2) of
                 {ok, <<16#1f, 16#8b>>} ->
                     Z = zlib:open(),
                     ok = zlib:inflateInit(Z, 31),
                     #rd{fd = Fd, z = Z, zstate = input};
                 _ ->
                     #rd{fd = Fd}
             end,
        try
            read_entries(Rd, #{}, [])
        catch
            error:Reason when Reason =:= data_error; Reason =:= einval ->
                fail({bad_archive, {gzip, Reason}})
        after
            case Rd#rd.z of
                undefined -> ok;
                Z1 -> zlib:close(Z1)
            end
        end
    after
        _ = file:close(Fd)
    end.

%% Meta holds what GNU long-name and pax headers say about the next entry.
-spec read_entries(#rd{}, map(), [#entry{}]) -> [#entry{}].
read_entries(Rd0, Meta, Acc) ->
    case read_block(Rd0) of
        eof ->
            map_size(Meta) =:= 0 orelse fail({bad_archive, truncated}),
            lists:reverse(Acc);
        {<<0:512/unit:8>>, _} ->
            map_size(Meta) =:= 0 orelse fail({bad_archive, truncated}),
            lists:reverse(Acc);
        {Header, Rd1} ->
            H = parse_header(Header),
            %% A pax size applies to the entry, not to further meta headers.
            MetaSize = maps:get(size, H),
            Size = maps:get(size, Meta, MetaSize),
            case maps:get(type, H) of
                gnu_long_name ->
                    {Data, Rd2} = read_meta(MetaSize, Rd1),
                    read_entries(Rd2, Meta#{name => cstring(Data)}, Acc);
                gnu_long_link ->
                    {Data, Rd2} = read_meta(MetaSize, Rd1),
                    read_entries(Rd2, Meta#{link => cstring(Data)}, Acc);
                pax ->
                    {Data, Rd2} = read_meta(MetaSize, Rd1),
                    read_entries(Rd2, maps:merge(Meta, pax(Data)), Acc);
                pax_global ->
                    {Data, Rd2} = read_meta(MetaSize, Rd1),
                    Global = pax(Data),
                    %% Global names or sizes would apply to every entry.
                    (maps:is_key(name, Global) orelse maps:is_key(link, Global)
                     orelse maps:is_key(size, Global))
                        andalso fail({bad_archive, global_pax_header}),
                    read_entries(Rd2, Meta, Acc);
                {unsupported, T} ->
                    fail({unsafe_entry, maps:get(name, Meta, maps:get(name, H)),
                          {unsupported_type, T}});
                Type ->
                    Raw = maps:get(name, Meta, maps:get(name, H)),
                    Target = case Type of
                                 T when T =:= symlink; T =:= link ->
                                     maps:get(link, Meta, maps:get(link, H));
                                 _ ->
                                     undefined
                             end,
                    %% As erl_tar reads them, links and directories carry no
                    %% data whatever their size field says.
                    DataSize = case Type of
                                   T1 when T1 =:= link; T1 =:= symlink; T1 =:= directory -> 0;
                                   _ -> Size
                               end,
                    Rd2 = skip(padded(DataSize), Rd1),
                    E = #entry{raw = Raw, path = split(Raw), type = Type, size = DataSize,
                               target = Target},
                    read_entries(Rd2, #{}, [E | Acc])
            end
    end.

-spec read_meta(non_neg_integer(), #rd{}) -> {binary(), #rd{}}.
read_meta(Size, _Rd) when Size > ?MAX_META ->
    fail({bad_archive, {header_too_large, Size}});
read_meta(Size, Rd) ->
    case read_exact(padded(Size), Rd) of
        {Data, Rd1} -> {binary:part(Data, 0, Size), Rd1};
        eof -> fail({bad_archive, truncated})
    end.

-spec padded(non_neg_integer()) -> non_neg_integer().
padded(N) -> (N + 511) div 512 * 512.

-spec parse_header(binary()) -> map().
parse_header(<<Name:100/binary, _Mode:8/binary, _Uid:8/binary, _Gid:8/binary, Size:12/binary,
               _Mtime:12/binary, Chksum:8/binary, Type, Link:100/binary, Magic:6/binary,
               _Version:2/binary, _Uname:32/binary, _Gname:32/binary, _Major:8/binary,
               _Minor:8/binary, Prefix:155/binary, _/binary>> = Block) ->
    Counted = <<(binary:part(Block, 0, 148))/binary, "        ",
                (binary:part(Block, 156, 356))/binary>>,
    Expected = number(Chksum),
    %% Some old tars summed signed bytes.
    (Expected =:= lists:sum([B || <<B>> <= Counted])
     orelse Expected =:= lists:sum([B || <<B:8/signed>> <= Counted]))
        orelse fail({bad_archive, bad_checksum}),
    FullName = case {Magic, cstring(Prefix)} of
                   {<<"ustar", 0>>, P} when P =/= <<>> -> <<P/binary, "/", (cstring(Name))/binary>>;
                   _ -> cstring(Name)
               end,
    #{name => FullName, size => number(Size), link => cstring(Link), type => type(Type)}.

-spec type(byte()) -> atom() | {unsupported, byte()}.
type(0) -> regular;
type($0) -> regular;
type($7) -> regular;
type($1) -> link;
type($2) -> symlink;
type($3) -> char;
type($4) -> block;
type($5) -> directory;
type($6) -> fifo;
type($L) -> gnu_long_name;
type($K) -> gnu_long_link;
type($x) -> pax;
type($g) -> pax_global;
type(T) -> {unsupported, T}.

-spec cstring(binary()) -> binary().
cstring(Bin) ->
    case binary:match(Bin, <<0>>) of
        {Pos, _} -> binary:part(Bin, 0, Pos);
        nomatch -> Bin
    end.

%% An octal field, or a base-256 one (first byte with its high bit set).
-spec number(binary()) -> non_neg_integer().
number(<<1:1, 0:1, _:6, _/binary>> = Field) ->
    Bits = bit_size(Field) - 1,
    <<_:1, N:Bits>> = Field,
    N;
number(<<1:1, _/bitstring>>) ->
    fail({bad_archive, negative_number});
number(Field) ->
    Digits = string:trim(binary_to_list(cstring(Field)), both, " "),
    case Digits of
        "" -> 0;
        _ ->
            lists:all(fun(C) -> C >= $0 andalso C =< $7 end, Digits)
                orelse fail({bad_archive, {bad_number, Field}}),
            list_to_integer(Digits, 8)
    end.

%% pax records: "<length> <key>=<value>\n".
-spec pax(binary()) -> map().
pax(Data) ->
    pax(Data, #{}).

-spec pax(binary(), map()) -> map().
pax(<<>>, Acc) ->
    Acc;
pax(Data, Acc) ->
    case binary:match(Data, <<" ">>) of
        {Pos, 1} when Pos > 0 ->
            Len = try binary_to_integer(binary:part(Data, 0, Pos))
                  catch _:_ -> fail({bad_archive, bad_pax_header})
                  end,
            (Len > Pos + 1 andalso Len =< byte_size(Data))
                orelse fail({bad_archive, bad_pax_header}),
            Record = binary:part(Data, Pos + 1, Len - Pos - 2),
            <<_:(Len - 1)/binary, Nl, Rest/binary>> = Data,
            Nl =:= $\n orelse fail({bad_archive, bad_pax_header}),
            case binary:split(Record, <<"=">>) of
                [<<"path">>, V] -> pax(Rest, Acc#{name => V});
                [<<"linkpath">>, V] -> pax(Rest, Acc#{link => V});
                [<<"size">>, V] ->
                    Size = try binary_to_integer(V)
                           catch _:_ -> fail({bad_archive, bad_pax_header})
                           end,
                    Size >= 0 orelse fail({bad_archive, bad_pax_header}),
                    pax(Rest, Acc#{size => Size});
                [_, _] -> pax(Rest, Acc);
                _ -> fail({bad_archive, bad_pax_header})
            end;
        _ ->
            %% Trailing NUL padding is tolerated.
            case binary:replace(Data, <<0>>, <<>>, [global]) of
                <<>> -> Acc;
                _ -> fail({bad_archive, bad_pax_header})
            end
    end.

-spec read_block(#rd{}) -> {binary(), #rd{}} | eof.
read_block(Rd) ->
    case read_exact(512, Rd) of
        eof -> eof;
        {_, _} = Ok -> Ok
    end.

%% Exactly N bytes; eof when the stream ends at once; a truncated archive
%% when it ends part way.
-spec read_exact(non_neg_integer(), #rd{}) -> {binary(), #rd{}} | eof.
read_exact(0, Rd) ->
    {<<>>, Rd};
read_exact(N, #rd{buf = Buf} = Rd) when byte_size(Buf) >= N ->
    <<Data:N/binary, Rest/binary>> = Buf,
    {Data, Rd#rd{buf = Rest}};
read_exact(N, #rd{buf = Buf} = Rd) ->
    case fill(Rd) of
        {ok, Rd1} -> read_exact(N, Rd1);
        eof when Buf =:= <<>> -> eof;
        eof -> fail({bad_archive, truncated})
    end.

-spec skip(non_neg_integer(), #rd{}) -> #rd{}.
skip(0, Rd) ->
    Rd;
skip(N, #rd{buf = Buf} = Rd) when byte_size(Buf) >= N ->
    <<_:N/binary, Rest/binary>> = Buf,
    Rd#rd{buf = Rest};
skip(N, #rd{buf = Buf} = Rd) ->
    case fill(Rd#rd{buf = <<>>}) of
        {ok, Rd1} -> skip(N - byte_size(Buf), Rd1);
        eof -> fail({bad_archive, truncated})
    end.

%% Appends more of the tar stream to the buffer.
-spec fill(#rd{}) -> {ok, #rd{}} | eof.
fill(#rd{z = undefined, fd = Fd, buf = Buf} = Rd) ->
    case file:read(Fd, 65536) of
        {ok, Data} -> {ok, Rd#rd{buf = <<Buf/binary, Data/binary>>}};
        eof -> eof;
        {error, Why} -> fail({bad_archive, {read, Why}})
    end;
fill(#rd{z = Z, zstate = continue, buf = Buf} = Rd) ->
    inflated(zlib:safeInflate(Z, []), Rd, Buf);
fill(#rd{z = Z, zstate = input, fd = Fd, buf = Buf} = Rd) ->
    case file:read(Fd, 65536) of
        {ok, Data} -> inflated(zlib:safeInflate(Z, Data), Rd, Buf);
        eof -> eof;
        {error, Why} -> fail({bad_archive, {read, Why}})
    end.

-spec inflated({continue | finished, iodata()} | {need_dictionary, term(), iodata()}, #rd{},
               binary()) -> {ok, #rd{}} | eof.
inflated({continue, Out}, Rd, Buf) ->
    {ok, Rd#rd{zstate = continue, buf = iolist_to_binary([Buf, Out])}};
inflated({finished, Out}, Rd, Buf) ->
    {ok, Rd#rd{zstate = input, buf = iolist_to_binary([Buf, Out])}};
inflated({need_dictionary, _, _}, _Rd, _Buf) ->
    fail({bad_archive, {gzip, need_dictionary}}).

%%====================================================================
%% Checking the entries
%%====================================================================

-spec check_entries([#entry{}], pos_integer()) -> ok.
check_entries(Entries, MaxUnpacked) ->
    Symlinks = maps:from_list([{P, true} || #entry{type = symlink, path = P} <- Entries]),
    Counts = lists:foldl(fun(#entry{path = P}, Acc) -> maps:update_with(P, fun(N) -> N + 1 end,
                                                                        1, Acc) end,
                         #{}, Entries),
    _ = lists:foldl(fun(E, Seen) -> check_entry(E, Symlinks, Counts, Seen) end, #{}, Entries),
    Total = lists:sum([S || #entry{type = regular, size = S} <- Entries]),
    Total =< MaxUnpacked orelse fail({too_large_unpacked, MaxUnpacked}),
    ok.

%% Seen: the regular files met so far, which hard links may name.
-spec check_entry(#entry{}, map(), map(), map()) -> map().
check_entry(#entry{raw = Raw, path = Path, type = Type, target = Target}, Symlinks, Counts,
            Seen) ->
    binary:match(Raw, <<"/">>) =:= {0, 1} andalso unsafe(Raw, absolute_path),
    lists:member(<<"..">>, Path) andalso unsafe(Raw, parent_reference),
    (Path =:= [] andalso Type =/= directory) andalso unsafe(Raw, empty_name),
    lists:member(Type, [char, block, fifo]) andalso unsafe(Raw, {special_file, Type}),
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

%%====================================================================
%% Extracting
%%====================================================================

-spec extract(file:filename(), file:filename(), [#entry{}]) -> ok.
extract(Tar, Staging, Entries) ->
    case file:make_dir(Staging) of
        ok -> ok;
        {error, Why} -> fail({file_error, mkdir, Staging, Why})
    end,
    %% erl_tar refuses any symbolic link whose target has a `..', even one
    %% that stays inside: links are made here, after everything else (no
    %% entry lies below a link, so the order does not matter).
    Files = case lists:keymember(symlink, #entry.type, Entries) of
                true -> [{files, [N || #entry{type = T, tar_name = N} <- Entries, T =/= symlink]}];
                false -> []
            end,
    case erl_tar:extract(Tar, [compressed, {cwd, Staging} | Files]) of
        ok -> ok;
        {error, Why1} -> fail({bad_archive, {extract, Why1}})
    end,
    %% erl_tar skips hard links: they become copies of their (checked) target.
    lists:foreach(fun(#entry{type = link, path = Path, target = Target}) ->
                          {ok, From} = link_target([], Target, fun(_) -> false end),
                          copy(filename:join([Staging | From]), filename:join([Staging | Path]));
                     (_) ->
                          ok
                  end, Entries),
    lists:foreach(fun(#entry{type = symlink, path = Path, target = Target}) ->
                          To = filename:join([Staging | Path]),
                          _ = filelib:ensure_dir(To),
                          case file:make_symlink(Target, To) of
                              ok -> ok;
                              {error, Why2} -> fail({file_error, make_symlink, To, Why2})
                          end;
                     (_) ->
                          ok
                  end, Entries).

-spec copy(file:filename(), file:filename()) -> ok.
copy(From, To) ->
    _ = filelib:ensure_dir(To),
    case file:copy(From, {To, [write, exclusive]}) of
        {ok, _} ->
            case file:read_file_info(From) of
                {ok, #file_info{mode = Mode}} -> _ = file:change_mode(To, Mode band 8#777), ok;
                {error, _} -> ok
            end;
        {error, Why} ->
            fail({file_error, copy, To, Why})
    end.

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
