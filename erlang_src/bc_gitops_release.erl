%%% @doc The `release' source type: downloads a release tarball over HTTP(S),
%%% verifies its SHA-256, unpacks it safely and says where the application's
%%% code is. This module validates the arguments, runs the steps below in a
%%% worker process, cleans up and locates the application; the download is
%%% {@link bc_gitops_download}'s job and the unpacking {@link bc_gitops_tar}'s.
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
%%%     archive. See {@link bc_gitops_tar}.</li>
%%% <li>The archive is extracted into a fresh staging directory beside
%%%     `DestDir', checked again on disk, the application is located in it,
%%%     and only then is the staging directory renamed to `DestDir', which
%%%     must not exist yet. On any error no temporary file or staging
%%%     directory is left behind.</li>
%%% </ol>
%%%
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
%%% <li>`max_unpacked_bytes': the most the entries of the archive may hold
%%%     once unpacked (default 4 GiB), against decompression bombs.</li>
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

-export([fetch/6]).

-export_type([options/0, result/0]).

-type options() :: #{
    timeout => pos_integer(),
    ca_file => file:filename_all(),
    max_bytes => pos_integer(),
    max_unpacked_bytes => pos_integer()
}.

-type result() :: #{app_dir := file:filename(), lib_dirs := [file:filename()]}.

-define(DEFAULT_TIMEOUT, 60000).
-define(DEFAULT_MAX_BYTES, 1 bsl 30).
-define(DEFAULT_MAX_UNPACKED, 4 bsl 30).

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
check_url(Url) ->
    case bc_gitops_download:url(Url) of
        {ok, S} -> S;
        error -> throw({invalid_argument, url, Url})
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
        throw:{?MODULE, Why} -> {error, Why};
        Class:Reason:Stack -> {error, {crashed, {Class, Reason, Stack}}}
    after
        _ = file:delete(Tmp),
        _ = file:del_dir_r(Staging)
    end.

-spec steps(map()) -> {ok, result()}.
steps(#{dest := Dest, tmp := Tmp, staging := Staging, sha256 := Expected} = Args) ->
    dest_absent(Dest),
    ensure_path(filename:dirname(Dest)),
    Download = #{timeout => maps:get(timeout, Args), max_bytes => maps:get(max_bytes, Args),
                 ca_file => maps:get(ca_file, Args), caller => maps:get(caller, Args)},
    Actual = case bc_gitops_download:to_file(maps:get(url, Args), Tmp, Download) of
                 {ok, Hex} -> Hex;
                 {error, Why1} -> fail(Why1)
             end,
    Actual =:= Expected
        orelse fail({sha256_mismatch, #{expected => Expected, actual => Actual}}),
    case bc_gitops_tar:unpack(Tmp, Staging, maps:get(max_unpacked, Args)) of
        ok -> ok;
        {error, Why2} -> fail(Why2)
    end,
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
    throw({?MODULE, Why}).

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
