%%% @doc The `release' source type: downloads a release tarball over HTTP(S),
%%% verifies its SHA-256, unpacks it safely and says where the application's
%%% code is.
%%%
%%% == Steps ==
%%% <ol>
%%% <li>The tarball is streamed with `httpc' (profile `bc_gitops', never the
%%%     default profile) into a temporary file beside `DestDir' (in its parent
%%%     directory), hashed as it arrives. More than `max_bytes' aborts the
%%%     download. Redirects (301, 302, 303, 307, 308) are followed, at most 5,
%%%     to `http' or `https' URLs only.</li>
%%% <li>HTTPS certificates are always verified: the operating system's CA
%%%     store (`public_key:cacerts_get/0') plus the certificates of the
%%%     `ca_file' option, with the HTTPS hostname check.</li>
%%% <li>The SHA-256 is compared before anything is unpacked. On mismatch the
%%%     temporary file is deleted and nothing is written to `DestDir'.</li>
%%% <li>The archive (gzip-compressed or plain tar) is listed before it is
%%%     extracted, and refused (`{error, {unsafe_entry, Name, Why}}') if any
%%%     entry has an absolute name, a `..' component, is a device or a FIFO,
%%%     lies below a symbolic link of the archive, or is a link whose target
%%%     is absolute, leaves the archive's root, or passes through another
%%%     symbolic link. Hard links must name an earlier regular file of the
%%%     archive; they are unpacked as copies. The listing is read twice, by
%%%     this module (which sees link targets) and by `erl_tar', and the two
%%%     must agree entry by entry.</li>
%%% <li>The archive is extracted into a fresh staging directory beside
%%%     `DestDir', checked again on disk, the application is located in it,
%%%     and only then is the staging directory renamed to `DestDir', which
%%%     must not exist yet. On any error no temporary file or staging
%%%     directory is left behind.</li>
%%% </ol>
%%%
%%% == Layouts ==
%%% Two layouts are accepted; anything else is `{error, {app_not_found, _}}'.
%%% <dl>
%%% <dt>A single application directory</dt>
%%% <dd>`<app>-<vsn>/ebin/<app>.app' (a directory named just `<app>' is
%%%     accepted too), with the rest of the application beside `ebin/'
%%%     (`priv/', ...). Then `app_dir' is that directory and `lib_dirs' is
%%%     `[app_dir]'.</dd>
%%% <dt>A release as `rebar3 tar' makes it</dt>
%%% <dd>`lib/<app>-<vsn>/ebin/<app>.app', its dependencies beside it as
%%%     `lib/<dep>-<vsn>/', and usually `releases/', `bin/', `erts-*/' (left
%%%     alone). Chosen whenever the top level has a `lib/' directory. Then
%%%     `app_dir' is `lib/<app>-<vsn>' and `lib_dirs' lists every `lib/*/'
%%%     that has an `ebin/' directory, the dependencies included, sorted by
%%%     name.</dd>
%%% </dl>
%%% In both layouts `ebin/<app>.app' must describe `App' and its `vsn' must
%%% equal `Version', else `{error, {version_mismatch, Expected, Found}}'.
%%% All returned paths are absolute and lie under `DestDir'.
%%%
%%% == Options ==
%%% <ul>
%%% <li>`timeout': milliseconds for the whole download, redirects included
%%%     (default 60000).</li>
%%% <li>`ca_file': a PEM file of extra CA certificates trusted for HTTPS.</li>
%%% <li>`max_bytes': the largest tarball accepted, in bytes (default 1 GiB).</li>
%%% <li>`max_unpacked_bytes': the most the regular files of the archive may
%%%     hold once unpacked (default 4 GiB), against decompression bombs.</li>
%%% </ul>
%%%
%%% == Errors ==
%%% `{invalid_argument, What, Value}', `{dest_exists, DestDir}',
%%% `{http_status, Code}', `{download_failed, Reason}' (`timeout' included),
%%% `{too_large, MaxBytes}', `{too_large_unpacked, Max}',
%%% `{too_many_redirects, Url}', `{bad_redirect, Location}',
%%% `{bad_ca_file, File, Reason}',
%%% `{sha256_mismatch, #{expected := Hex, actual := Hex}}',
%%% `{unsafe_entry, Name, Why}', `{bad_archive, Reason}',
%%% `{app_not_found, #{app := App, layout := single | rebar3_tar, candidates := Dirs}}',
%%% `{bad_app_file, File, Reason}', `{version_mismatch, Expected, Found}',
%%% `{file_error, Op, Path, Reason}', `{crashed, Reason}'.
%%%
%%% Applications needed at run time: `inets', `ssl', `public_key', `crypto'
%%% (started on demand).
-module(bc_gitops_release).

-include_lib("kernel/include/file.hrl").
-include_lib("public_key/include/public_key.hrl").

-export([fetch/6]).

-export_type([options/0, result/0]).

-type options() :: #{
    timeout => pos_integer(),
    ca_file => file:filename_all(),
    max_bytes => pos_integer(),
    max_unpacked_bytes => pos_integer()
}.

-type result() :: #{app_dir := file:filename(), lib_dirs := [file:filename()]}.

-define(PROFILE, bc_gitops).
-define(DEFAULT_TIMEOUT, 60000).
-define(DEFAULT_MAX_BYTES, 1 bsl 30).
-define(DEFAULT_MAX_UNPACKED, 4 bsl 30).
-define(MAX_REDIRECTS, 5).
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

%% @doc Downloads the tarball at `Url', verifies that its SHA-256 is
%% `Sha256' (64 hex digits, either case), unpacks it into `DestDir' (which
%% must not exist) and returns the application's directory and every library
%% directory to put in the code path. See the module documentation for the
%% layouts, options and errors. Never raises; the work runs in a separate
%% process so no stray message reaches the caller.
-spec fetch(App :: atom(), Version :: binary(), Url :: binary(), Sha256 :: binary(),
            DestDir :: file:filename(), Opts :: map()) ->
          {ok, #{app_dir := file:filename(), lib_dirs := [file:filename()]}}
          | {error, term()}.
fetch(App, Version, Url, Sha256, DestDir, Opts) ->
    case validate(App, Version, Url, Sha256, DestDir, Opts) of
        {ok, Args} -> run(Args);
        {error, _} = Error -> Error
    end.

%%====================================================================
%% Arguments
%%====================================================================

-spec validate(term(), term(), term(), term(), term(), term()) -> {ok, map()} | {error, term()}.
validate(App, Version, Url, Sha256, DestDir, Opts) ->
    try
        is_atom(App) orelse throw({invalid_argument, app, App}),
        is_binary(Version) andalso Version =/= <<>>
            orelse throw({invalid_argument, version, Version}),
        UrlS = check_url(Url),
        Sha = check_sha(Sha256),
        Dest = check_dest(DestDir),
        is_map(Opts) orelse throw({invalid_argument, opts, Opts}),
        Timeout = opt(timeout, Opts, ?DEFAULT_TIMEOUT, fun is_pos_integer/1),
        MaxBytes = opt(max_bytes, Opts, ?DEFAULT_MAX_BYTES, fun is_pos_integer/1),
        MaxUnpacked = opt(max_unpacked_bytes, Opts, ?DEFAULT_MAX_UNPACKED,
                          fun is_pos_integer/1),
        CaFile = opt(ca_file, Opts, undefined, fun is_filename/1),
        {ok, #{app => App, version => Version, url => UrlS, sha256 => Sha, dest => Dest,
               timeout => Timeout, max_bytes => MaxBytes, max_unpacked => MaxUnpacked,
               ca_file => CaFile}}
    catch
        throw:Why -> {error, Why};
        error:Why -> {error, {invalid_argument, Why}}
    end.

-spec opt(atom(), map(), term(), fun((term()) -> boolean())) -> term().
opt(Key, Opts, Default, Valid) ->
    case maps:find(Key, Opts) of
        error -> Default;
        {ok, V} ->
            case Valid(V) of
                true -> V;
                false -> throw({invalid_argument, Key, V})
            end
    end.

-spec is_pos_integer(term()) -> boolean().
is_pos_integer(V) -> is_integer(V) andalso V > 0.

-spec is_filename(term()) -> boolean().
is_filename(V) when is_binary(V) -> V =/= <<>>;
is_filename(V) when is_list(V) -> V =/= [] andalso io_lib:char_list(V);
is_filename(_) -> false.

-spec check_url(term()) -> string().
check_url(Url) when is_binary(Url); is_list(Url) ->
    case unicode:characters_to_list(Url) of
        S when is_list(S) ->
            case scheme(S) of
                {ok, _} -> S;
                error -> throw({invalid_argument, url, Url})
            end;
        _ ->
            throw({invalid_argument, url, Url})
    end;
check_url(Url) ->
    throw({invalid_argument, url, Url}).

%% The scheme of an absolute http(s) URL with a host.
-spec scheme(string()) -> {ok, http | https} | error.
scheme(S) ->
    case uri_string:parse(S) of
        #{scheme := Scheme, host := Host} when Host =/= "" ->
            case string:lowercase(Scheme) of
                "http" -> {ok, http};
                "https" -> {ok, https};
                _ -> error
            end;
        _ ->
            error
    end.

-spec check_sha(term()) -> binary().
check_sha(Sha) when is_binary(Sha), byte_size(Sha) =:= 64 ->
    Lower = << <<(case C of U when U >= $A, U =< $F -> U + 32; _ -> C end)>> || <<C>> <= Sha >>,
    case lists:all(fun(C) -> (C >= $0 andalso C =< $9) orelse (C >= $a andalso C =< $f) end,
                   binary_to_list(Lower)) of
        true -> Lower;
        false -> throw({invalid_argument, sha256, Sha})
    end;
check_sha(Sha) ->
    throw({invalid_argument, sha256, Sha}).

-spec check_dest(term()) -> file:filename().
check_dest(Dir) ->
    case is_filename(Dir) of
        true ->
            Abs = filename:absname(unicode:characters_to_list(Dir)),
            case filename:basename(Abs) of
                Base when Base =:= ""; Base =:= "."; Base =:= ".."; Base =:= "/" ->
                    throw({invalid_argument, dest_dir, Dir});
                _ ->
                    Abs
            end;
        false ->
            throw({invalid_argument, dest_dir, Dir})
    end.

%%====================================================================
%% The worker
%%====================================================================

-spec run(map()) -> {ok, result()} | {error, term()}.
run(#{dest := Dest} = Args) ->
    Parent = filename:dirname(Dest),
    Unique = integer_to_list(erlang:unique_integer([positive])) ++ "-" ++ os:getpid(),
    Base = "." ++ filename:basename(Dest),
    Tmp = filename:join(Parent, Base ++ ".download-" ++ Unique),
    Staging = filename:join(Parent, Base ++ ".staging-" ++ Unique),
    Caller = self(),
    Ref = make_ref(),
    Work = Args#{tmp => Tmp, staging => Staging, caller => Caller},
    {Pid, MRef} = spawn_monitor(fun() -> Caller ! {Ref, worker(Work)} end),
    %% The result is sent before the worker exits, so it is here by the time
    %% the 'DOWN' message is.
    Result =
        receive
            {'DOWN', MRef, process, Pid, Reason} ->
                receive
                    {Ref, R} -> R
                after 0 -> {error, {crashed, Reason}}
                end
        end,
    %% The worker cleans up after itself; this covers a worker that was killed.
    _ = file:delete(Tmp),
    _ = file:del_dir_r(Staging),
    Result.

-spec worker(map()) -> {ok, result()} | {error, term()}.
worker(#{tmp := Tmp, staging := Staging} = Args) ->
    try
        steps(Args)
    catch
        throw:{release_error, Why} -> {error, Why};
        Class:Reason:Stack -> {error, {crashed, {Class, Reason, Stack}}}
    after
        _ = file:delete(Tmp),
        _ = file:del_dir_r(Staging)
    end.

-spec steps(map()) -> {ok, result()}.
steps(#{dest := Dest, tmp := Tmp, staging := Staging, sha256 := Expected} = Args) ->
    dest_absent(Dest),
    ensure_path(filename:dirname(Dest)),
    Actual = download(Args),
    Actual =:= Expected
        orelse fail({sha256_mismatch, #{expected => Expected, actual => Actual}}),
    Entries = list_archive(Tmp),
    check_entries(Entries, maps:get(max_unpacked, Args)),
    extract(Tmp, Staging, Entries),
    check_tree(Staging),
    {AppRel, LibRels} = locate(Staging, maps:get(app, Args), maps:get(version, Args)),
    dest_absent(Dest),
    case file:rename(Staging, Dest) of
        ok -> ok;
        {error, Why} -> fail({file_error, rename, Dest, Why})
    end,
    {ok, #{app_dir => filename:join(Dest, AppRel),
           lib_dirs => [filename:join(Dest, L) || L <- LibRels]}}.

-spec fail(term()) -> no_return().
fail(Why) ->
    throw({release_error, Why}).

-spec dest_absent(file:filename()) -> ok.
dest_absent(Dest) ->
    case file:read_link_info(Dest) of
        {error, enoent} -> ok;
        {ok, _} -> fail({dest_exists, Dest});
        {error, Why} -> fail({file_error, stat, Dest, Why})
    end.

-spec ensure_path(file:filename()) -> ok.
ensure_path(Dir) ->
    case filelib:ensure_path(Dir) of
        ok -> ok;
        {error, Why} -> fail({file_error, mkdir, Dir, Why})
    end.

%%====================================================================
%% Download
%%====================================================================

%% Streams the URL into the temporary file; the lowercase hex SHA-256.
-spec download(map()) -> binary().
download(#{url := Url, tmp := Tmp, timeout := Timeout} = Args) ->
    start_apps(),
    CaCerts = extra_cacerts(maps:get(ca_file, Args)),
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    CallerRef = erlang:monitor(process, maps:get(caller, Args)),
    get_url(Url, Args#{deadline => Deadline, extra_cacerts => CaCerts,
                       caller_ref => CallerRef, tmp => Tmp}, 0).

-spec start_apps() -> ok.
start_apps() ->
    lists:foreach(fun(App) ->
                          case application:ensure_all_started(App) of
                              {ok, _} -> ok;
                              {error, Why} -> fail({download_failed, {start, App, Why}})
                          end
                  end, [crypto, public_key, ssl, inets]),
    case inets:start(httpc, [{profile, ?PROFILE}]) of
        {ok, _} -> ok;
        {error, {already_started, _}} -> ok;
        {error, Why} -> fail({download_failed, {httpc_profile, Why}})
    end.

-spec extra_cacerts(undefined | file:filename_all()) -> [public_key:der_encoded()].
extra_cacerts(undefined) ->
    [];
extra_cacerts(File) ->
    case file:read_file(File) of
        {ok, Pem} ->
            Ders = try public_key:pem_decode(Pem) of
                       Decoded -> [Der || {'Certificate', Der, not_encrypted} <- Decoded]
                   catch
                       _:_ -> []
                   end,
            Ders =/= [] orelse fail({bad_ca_file, File, no_certificates}),
            Ders;
        {error, Why} ->
            fail({bad_ca_file, File, Why})
    end.

-spec get_url(string(), map(), non_neg_integer()) -> binary().
get_url(Url, _Args, Redirects) when Redirects > ?MAX_REDIRECTS ->
    fail({too_many_redirects, Url});
get_url(Url, #{tmp := Tmp} = Args, Redirects) ->
    Left = max(1, remaining(Args)),
    HttpOpts = [{timeout, Left}, {connect_timeout, Left}, {autoredirect, false}
                | ssl_opts(Url, maps:get(extra_cacerts, Args))],
    ReqOpts = [{sync, false}, {stream, {self, once}}, {body_format, binary}],
    {ok, Fd} = case file:open(Tmp, [write, raw, binary, exclusive]) of
                   {ok, _} = Ok -> Ok;
                   {error, Why0} -> fail({file_error, open, Tmp, Why0})
               end,
    Outcome =
        try
            ReqId = case httpc:request(get, {Url, [{"user-agent", "bc_gitops"}]}, HttpOpts,
                                       ReqOpts, ?PROFILE) of
                        {ok, Id} -> Id;
                        {error, Why1} -> fail({download_failed, Why1})
                    end,
            State = #{ctx => crypto:hash_init(sha256), size => 0, fd => Fd},
            try
                receive_loop(ReqId, State, Args)
            catch
                throw:{release_error, _} = Error ->
                    _ = httpc:cancel_request(ReqId, ?PROFILE),
                    throw(Error)
            end
        after
            _ = file:close(Fd)
        end,
    case Outcome of
        {done, Hex} ->
            Hex;
        {redirect, Location} ->
            _ = file:delete(Tmp),
            Next = case redirect_target(Url, Location) of
                       {ok, N} -> N;
                       error -> fail({bad_redirect, Location})
                   end,
            get_url(Next, Args, Redirects + 1)
    end.

-spec remaining(map()) -> non_neg_integer().
remaining(#{deadline := Deadline}) ->
    max(0, Deadline - erlang:monotonic_time(millisecond)).

-spec redirect_target(string(), string()) -> {ok, string()} | error.
redirect_target(Base, Location) ->
    try uri_string:resolve(Location, Base) of
        Next when is_list(Next) ->
            case scheme(Next) of
                {ok, _} -> {ok, Next};
                error -> error
            end;
        _ ->
            error
    catch
        _:_ -> error
    end.

-spec ssl_opts(string(), [public_key:der_encoded()]) -> [{ssl, [ssl:tls_client_option()]}].
ssl_opts(Url, Extra) ->
    case scheme(Url) of
        {ok, https} ->
            #{host := Host} = uri_string:parse(Url),
            Sni = case inet:parse_address(Host) of
                      {ok, _} -> [];
                      {error, _} -> [{server_name_indication, Host}]
                  end,
            [{ssl, [{verify, verify_peer},
                    {cacerts, system_cacerts() ++ Extra},
                    {depth, 10},
                    {customize_hostname_check,
                     [{match_fun, public_key:pkix_verify_hostname_match_fun(https)}]}
                    | Sni]}];
        _ ->
            []
    end.

-spec system_cacerts() -> [public_key:der_encoded()].
system_cacerts() ->
    try public_key:cacerts_get() of
        Certs -> [Der || #cert{der = Der} <- Certs]
    catch
        _:_ -> []
    end.

-spec receive_loop(reference(), map(), map()) -> {done, binary()} | {redirect, string()}.
receive_loop(ReqId, #{fd := Fd, ctx := Ctx, size := Size} = State, Args) ->
    CallerRef = maps:get(caller_ref, Args),
    Max = maps:get(max_bytes, Args),
    receive
        {http, {ReqId, stream_start, Headers, Pid}} ->
            case content_length(Headers) of
                N when is_integer(N), N > Max -> fail({too_large, Max});
                _ -> ok
            end,
            ok = httpc:stream_next(Pid),
            receive_loop(ReqId, State#{pid => Pid}, Args);
        {http, {ReqId, stream, Bin}} ->
            NewSize = Size + byte_size(Bin),
            NewSize =< Max orelse fail({too_large, Max}),
            write(Fd, Bin, maps:get(tmp, Args)),
            case State of
                #{pid := Pid} -> ok = httpc:stream_next(Pid);
                _ -> ok
            end,
            receive_loop(ReqId, State#{ctx := crypto:hash_update(Ctx, Bin), size := NewSize},
                         Args);
        {http, {ReqId, stream_end, _Headers}} ->
            {done, hex(crypto:hash_final(Ctx))};
        {http, {ReqId, {{_, 200, _}, _Headers, Body}}} when is_binary(Body) ->
            %% A whole answer instead of a stream (an empty body, say).
            byte_size(Body) =< Max orelse fail({too_large, Max}),
            write(Fd, Body, maps:get(tmp, Args)),
            {done, hex(crypto:hash_final(crypto:hash_update(Ctx, Body)))};
        {http, {ReqId, {{_, Code, _}, Headers, _Body}}} when Code >= 300, Code < 400 ->
            case lists:member(Code, [301, 302, 303, 307, 308])
                andalso proplists:get_value("location", Headers) of
                Location when is_list(Location), Location =/= "" -> {redirect, Location};
                _ -> fail({http_status, Code})
            end;
        {http, {ReqId, {{_, Code, _}, _Headers, _Body}}} ->
            fail({http_status, Code});
        {http, {ReqId, {error, Why}}} ->
            fail({download_failed, Why});
        {'DOWN', CallerRef, process, _, _} ->
            fail({download_failed, caller_down})
    after remaining(Args) ->
        fail({download_failed, timeout})
    end.

-spec content_length([{string(), string()}]) -> non_neg_integer() | undefined.
content_length(Headers) ->
    case proplists:get_value("content-length", Headers) of
        undefined -> undefined;
        V -> try list_to_integer(string:trim(V)) catch _:_ -> undefined end
    end.

-spec write(file:io_device(), binary(), file:filename()) -> ok.
write(Fd, Bin, Path) ->
    case file:write(Fd, Bin) of
        ok -> ok;
        {error, Why} -> fail({file_error, write, Path, Why})
    end.

-spec hex(binary()) -> binary().
hex(Bin) ->
    << <<(hex_digit(N))>> || <<N:4>> <= Bin >>.

-spec hex_digit(0..15) -> byte().
hex_digit(N) when N < 10 -> $0 + N;
hex_digit(N) -> $a + N - 10.

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

%%====================================================================
%% Finding the application
%%====================================================================

%% The app directory and the library directories, relative to Root.
-spec locate(file:filename(), atom(), binary()) -> {string(), [string()]}.
locate(Root, App, Version) ->
    AppS = atom_to_list(App),
    case filelib:is_dir(filename:join(Root, "lib")) of
        true ->
            LibRoot = filename:join(Root, "lib"),
            Libs = [filename:join("lib", N) || N <- dir_names(LibRoot),
                                               filelib:is_dir(filename:join([LibRoot, N, "ebin"]))],
            Candidates = [D || D <- Libs, app_named(filename:basename(D), AppS)],
            AppDir = pick(Root, App, Version, rebar3_tar, Candidates),
            {AppDir, Libs};
        false ->
            Candidates = [N || N <- dir_names(Root), app_named(N, AppS),
                               filelib:is_dir(filename:join([Root, N, "ebin"]))],
            AppDir = pick(Root, App, Version, single, Candidates),
            {AppDir, [AppDir]}
    end.

-spec dir_names(file:filename()) -> [string()].
dir_names(Dir) ->
    case file:list_dir_all(Dir) of
        {ok, Names} -> lists:sort([N || N <- Names, is_list(N)]);
        {error, Why} -> fail({file_error, list_dir, Dir, Why})
    end.

%% `<app>' or `<app>-<vsn>'.
-spec app_named(string(), string()) -> boolean().
app_named(Name, App) ->
    Name =:= App orelse lists:prefix(App ++ "-", Name).

-spec pick(file:filename(), atom(), binary(), single | rebar3_tar, [string()]) -> string().
pick(Root, App, Version, Layout, Candidates) ->
    AppFile = atom_to_list(App) ++ ".app",
    Found = [{D, app_vsn(Root, filename:join([D, "ebin", AppFile]), App)}
             || D <- Candidates, filelib:is_regular(filename:join([Root, D, "ebin", AppFile]))],
    Found =/= [] orelse fail({app_not_found, #{app => App, layout => Layout,
                                               candidates => Candidates}}),
    Exact = atom_to_list(App) ++ "-" ++ binary_to_list(Version),
    case [D || {D, Vsn} <- Found, Vsn =:= Version] of
        [] ->
            [{_, Vsn} | _] = Found,
            fail({version_mismatch, Version, Vsn});
        Matching ->
            case lists:member(Exact, [filename:basename(D) || D <- Matching]) of
                true -> hd([D || D <- Matching, filename:basename(D) =:= Exact]);
                false -> hd(Matching)
            end
    end.

%% The vsn of the .app file at Rel (relative to Root), which must describe App.
-spec app_vsn(file:filename(), file:filename(), atom()) -> binary().
app_vsn(Root, Rel, App) ->
    case file:consult(filename:join(Root, Rel)) of
        {ok, [{application, App, Props}]} when is_list(Props) ->
            case proplists:get_value(vsn, Props) of
                Vsn when is_list(Vsn) ->
                    case unicode:characters_to_binary(Vsn) of
                        B when is_binary(B) -> B;
                        _ -> fail({bad_app_file, Rel, {bad_vsn, Vsn}})
                    end;
                Other ->
                    fail({bad_app_file, Rel, {bad_vsn, Other}})
            end;
        {ok, Terms} ->
            fail({bad_app_file, Rel, {not_an_application_of, App, Terms}});
        {error, Why} ->
            fail({bad_app_file, Rel, Why})
    end.
