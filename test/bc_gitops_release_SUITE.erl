%%% The `release' source type: real tarballs, built here, served over HTTP and
%%% HTTPS by OTP's own httpd on 127.0.0.1, fetched by bc_gitops_release.
-module(bc_gitops_release_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("kernel/include/file.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1,
         init_per_testcase/2, end_per_testcase/2]).
-export([single_layout_loads/1, plain_tar_and_uppercase_sha/1, rebar3_tar_layout/1,
         sha256_mismatch_writes_nothing/1, http_404/1, version_mismatch/1,
         app_not_found/1, dest_exists/1, max_bytes/1, max_bytes_when_chunked/1, long_names/1,
         unsafe_dotdot/1, unsafe_absolute/1, unsafe_symlink_to_etc/1,
         unsafe_symlink_escapes/1, unsafe_other_entries/1, safe_links_kept/1,
         not_a_tarball/1, https_needs_the_ca/1, https_checks_the_hostname/1,
         redirect_followed/1, download_timeout/1, invalid_arguments/1]).
%% ESI callbacks of the test HTTP server.
-export([redirect/3, slow/3, chunked/3]).

-define(VSN, <<"1.2.0">>).

suite() -> [{timetrap, {minutes, 2}}].

all() ->
    [single_layout_loads, plain_tar_and_uppercase_sha, rebar3_tar_layout,
     sha256_mismatch_writes_nothing, http_404, version_mismatch, app_not_found, dest_exists,
     max_bytes, max_bytes_when_chunked, long_names, unsafe_dotdot, unsafe_absolute,
     unsafe_symlink_to_etc, unsafe_symlink_escapes,
     unsafe_other_entries, safe_links_kept, not_a_tarball, https_needs_the_ca,
     https_checks_the_hostname, redirect_followed, download_timeout, invalid_arguments].

%%====================================================================
%% Setup: tarballs and servers
%%====================================================================

init_per_suite(Config) ->
    {ok, _} = application:ensure_all_started(inets),
    {ok, _} = application:ensure_all_started(ssl),
    Root = bc_gitops_test_util:tmp_dir("ct_release"),
    Docs = filename:join(Root, "docs"),
    Build = filename:join(Root, "build"),
    ok = filelib:ensure_path(Docs),
    %% The single-directory layout, compressed and plain.
    Single = app_dir(Build, bcr_single, "1.2.0"),
    ok = file:write_file(filename:join([Single, "priv", "data.txt"]), <<"payload">>, []),
    ok = erl_tar:create(filename:join(Docs, "single.tar.gz"),
                        [{"bcr_single-1.2.0", Single}], [compressed]),
    ok = erl_tar:create(filename:join(Docs, "single.tar"),
                        [{"bcr_single-1.2.0", Single}], []),
    %% rebar3 tar: lib/<app>-<vsn> and its dependency, a lib dir without
    %% ebin, releases/ and bin/.
    Rel = app_dir(Build, bcr_rel, "0.3.0"),
    Dep = app_dir(Build, bcr_dep, "2.0.0"),
    NoEbin = filename:join(Build, "noebin-1.0"),
    ok = filelib:ensure_path(filename:join(NoEbin, "priv")),
    ok = file:write_file(filename:join([NoEbin, "priv", "x"]), <<"x">>),
    ok = erl_tar:create(filename:join(Docs, "rebar3.tar.gz"),
                        [{"lib/bcr_rel-0.3.0", Rel}, {"lib/bcr_dep-2.0.0", Dep},
                         {"lib/noebin-1.0", NoEbin},
                         {"releases/0.3.0/start.script", <<"{script, x}.\n">>},
                         {"bin/bcr_rel", <<"#!/bin/sh\n">>}], [compressed]),
    ok = file:write_file(filename:join(Docs, "garbage.tar.gz"),
                         crypto:strong_rand_bytes(5000)),
    ok = httpd_dir(Root),
    persistent_term:put({?MODULE, docs}, Docs),
    {ok, Http} = inets:start(httpd, httpd_conf(Root, Docs) ++ [{server_name, "bcr_http"}]),
    %% HTTPS: a test CA and a server certificate for "localhost".
    {CaFile, SslOpts} = bc_gitops_test_keys:tls_server(Root),
    {ok, Https} = inets:start(httpd, httpd_conf(Root, Docs)
                              ++ [{server_name, "bcr_https"},
                                  {socket_type, {ssl, SslOpts}}]),
    [{root, Root}, {docs, Docs}, {ca_file, CaFile},
     {http, Http}, {http_port, port(Http)}, {https, Https}, {https_port, port(Https)}
     | Config].

end_per_suite(Config) ->
    _ = persistent_term:erase({?MODULE, docs}),
    _ = inets:stop(httpd, ?config(http, Config)),
    _ = inets:stop(httpd, ?config(https, Config)),
    bc_gitops_test_util:rm_rf(?config(root, Config)).

init_per_testcase(_Case, Config) ->
    Parent = bc_gitops_test_util:tmp_dir("ct_release_case"),
    [{parent, Parent}, {dest, filename:join(Parent, "release")} | Config].

end_per_testcase(_Case, Config) ->
    bc_gitops_test_util:rm_rf(?config(parent, Config)).

httpd_dir(Root) ->
    filelib:ensure_path(filename:join(Root, "server")).

httpd_conf(Root, Docs) ->
    [{port, 0}, {bind_address, {127, 0, 0, 1}},
     {server_root, filename:join(Root, "server")}, {document_root, Docs},
     {modules, [mod_alias, mod_esi, mod_get, mod_head]},
     {erl_script_alias, {"/esi", [?MODULE]}}].

port(Pid) ->
    proplists:get_value(port, httpd:info(Pid)).

%% <Build>/<App>-<Vsn>: ebin with a compiled module and the .app file, priv.
app_dir(Build, App, Vsn) ->
    Name = atom_to_list(App),
    Dir = filename:join(Build, Name ++ "-" ++ Vsn),
    Ebin = filename:join(Dir, "ebin"),
    ok = filelib:ensure_path(Ebin),
    ok = filelib:ensure_path(filename:join(Dir, "priv")),
    Mod = list_to_atom(Name ++ "_mod"),
    Src = filename:join(Build, atom_to_list(Mod) ++ ".erl"),
    ok = file:write_file(Src, io_lib:format("-module(~s).~n-export([hello/0]).~n"
                                            "hello() -> {~s, ~p}.~n", [Mod, Name, Vsn])),
    {ok, Mod} = compile:file(Src, [{outdir, Ebin}, return_errors]),
    AppTerm = {application, App, [{description, "test app"}, {vsn, Vsn}, {modules, [Mod]},
                                  {registered, []}, {applications, [kernel, stdlib]}]},
    ok = file:write_file(filename:join(Ebin, Name ++ ".app"), io_lib:format("~p.~n", [AppTerm])),
    Dir.

%%====================================================================
%% Helpers
%%====================================================================

url(Config, File) ->
    iolist_to_binary(["http://127.0.0.1:", integer_to_list(?config(http_port, Config)), "/", File]).

sha(Config, File) ->
    {ok, Bin} = file:read_file(filename:join(?config(docs, Config), File)),
    sha_of(Bin).

sha_of(Bin) ->
    list_to_binary([io_lib:format("~2.16.0b", [B]) || <<B>> <= crypto:hash(sha256, Bin)]).

%% Publishes Bin under Name on both servers; its URL and SHA-256.
publish(Config, Name, Bin) ->
    ok = file:write_file(filename:join(?config(docs, Config), Name), Bin),
    {url(Config, Name), sha_of(Bin)}.

fetch(App, Vsn, Url, Sha, Config) ->
    fetch(App, Vsn, Url, Sha, Config, #{}).

fetch(App, Vsn, Url, Sha, Config, Opts) ->
    bc_gitops_release:fetch(App, Vsn, Url, Sha, ?config(dest, Config), Opts).

%% Nothing at all was left beside the destination: no DestDir, no temporary
%% file, no staging directory.
assert_nothing_written(Config) ->
    ?assertNot(filelib:is_file(?config(dest, Config))),
    ?assertEqual({ok, []}, file:list_dir(?config(parent, Config))).

assert_no_messages() ->
    timer:sleep(100),
    ?assertEqual({messages, []}, process_info(self(), messages)).

%% A gzip-compressed tar of crafted ustar entries {Name, Type, LinkName, Data},
%% Type being regular | symlink | hardlink | fifo | directory.
raw_tar(Entries) ->
    zlib:gzip([[ustar_entry(E) || E <- Entries], <<0:(1024 * 8)>>]).

ustar_entry({Name, Type, Link, Data}) ->
    Flag = maps:get(Type, #{regular => $0, hardlink => $1, symlink => $2, fifo => $6,
                            directory => $5}),
    Size = byte_size(Data),
    Field = fun(Bin, Len) -> <<Bin/binary, 0:((Len - byte_size(Bin)) * 8)>> end,
    Octal = fun(N, Len) -> Field(list_to_binary(io_lib:format("~*.8.0b", [Len - 1, N])), Len) end,
    Header = fun(Chk) ->
                     <<(Field(Name, 100))/binary, (Octal(8#644, 8))/binary, (Octal(0, 8))/binary,
                       (Octal(0, 8))/binary, (Octal(Size, 12))/binary, (Octal(0, 12))/binary,
                       Chk/binary, Flag, (Field(Link, 100))/binary, "ustar", 0, "00",
                       0:(32 * 8), 0:(32 * 8), (Octal(0, 8))/binary, (Octal(0, 8))/binary,
                       0:(155 * 8), 0:(12 * 8)>>
             end,
    Sum = lists:sum(binary_to_list(Header(<<"        ">>))),
    Chk = <<(list_to_binary(io_lib:format("~6.8.0b", [Sum])))/binary, 0, " ">>,
    Pad = (512 - Size rem 512) rem 512,
    <<(Header(Chk))/binary, Data/binary, 0:(Pad * 8)>>.

%% The valid single-layout app, as raw entries, to which hostile entries are
%% appended: the only thing wrong with the tarball is the hostile entry.
base_entries(Config) ->
    {ok, Files} = erl_tar:extract(filename:join(?config(docs, Config), "single.tar.gz"),
                                  [compressed, memory]),
    [{list_to_binary(N), regular, <<>>, B} || {N, B} <- Files].

%% erl_tar archive whose listed entries come from the disk or memory, for the
%% symlink cases (erl_tar:add/4 stores a symlink as a symlink).
erl_tar_with(Config, Name, Extra) ->
    Path = filename:join(?config(root, Config), Name),
    {ok, Tar} = erl_tar:open(Path, [write, compressed]),
    ok = erl_tar:add(Tar, filename:join([?config(root, Config), "build", "bcr_single-1.2.0"]),
                     "bcr_single-1.2.0", []),
    lists:foreach(fun({InArchive, What}) -> ok = erl_tar:add(Tar, What, InArchive, []) end,
                  Extra),
    ok = erl_tar:close(Tar),
    {ok, Bin} = file:read_file(Path),
    publish(Config, Name, Bin).

with_code_path(Dirs, Apps, Fun) ->
    Ebins = [filename:join(D, "ebin") || D <- Dirs],
    [true = code:add_patha(E) || E <- Ebins],
    try
        Fun()
    after
        [application:unload(A) || A <- Apps],
        [begin code:purge(M), code:delete(M), code:purge(M) end
         || A <- Apps, M <- [list_to_atom(atom_to_list(A) ++ "_mod")]],
        [code:del_path(E) || E <- Ebins]
    end.

%%====================================================================
%% Cases
%%====================================================================

single_layout_loads(Config) ->
    Dest = ?config(dest, Config),
    {ok, Result} = fetch(bcr_single, ?VSN, url(Config, "single.tar.gz"),
                         sha(Config, "single.tar.gz"), Config),
    AppDir = filename:join(Dest, "bcr_single-1.2.0"),
    ?assertEqual(#{app_dir => AppDir, lib_dirs => [AppDir]}, Result),
    ?assertEqual({ok, <<"payload">>}, file:read_file(filename:join([AppDir, "priv", "data.txt"]))),
    %% Only DestDir remains beside it.
    ?assertEqual({ok, ["release"]}, file:list_dir(?config(parent, Config))),
    with_code_path([AppDir], [bcr_single],
                   fun() ->
                           ok = application:load(bcr_single),
                           ?assertEqual({ok, "1.2.0"}, application:get_key(bcr_single, vsn)),
                           ?assertEqual({bcr_single, "1.2.0"}, bcr_single_mod:hello()),
                           ?assertEqual(filename:join(AppDir, "ebin"),
                                        filename:dirname(code:which(bcr_single_mod)))
                   end),
    assert_no_messages().

plain_tar_and_uppercase_sha(Config) ->
    Upper = string:uppercase(sha(Config, "single.tar")),
    ?assertMatch({ok, #{app_dir := _}},
                 fetch(bcr_single, ?VSN, url(Config, "single.tar"), Upper, Config)),
    ?assert(filelib:is_regular(filename:join([?config(dest, Config), "bcr_single-1.2.0", "ebin",
                                              "bcr_single.app"]))).

rebar3_tar_layout(Config) ->
    Dest = ?config(dest, Config),
    {ok, #{app_dir := AppDir, lib_dirs := Libs}} =
        fetch(bcr_rel, <<"0.3.0">>, url(Config, "rebar3.tar.gz"), sha(Config, "rebar3.tar.gz"),
              Config),
    ?assertEqual(filename:join([Dest, "lib", "bcr_rel-0.3.0"]), AppDir),
    %% Every lib dir with an ebin, dependencies included; noebin-1.0 is not one.
    ?assertEqual([filename:join([Dest, "lib", "bcr_dep-2.0.0"]), AppDir], Libs),
    ?assert(filelib:is_regular(filename:join([Dest, "releases", "0.3.0", "start.script"]))),
    with_code_path(Libs, [bcr_rel, bcr_dep],
                   fun() ->
                           ok = application:load(bcr_rel),
                           ok = application:load(bcr_dep),
                           ?assertEqual({ok, "0.3.0"}, application:get_key(bcr_rel, vsn)),
                           ?assertEqual({ok, "2.0.0"}, application:get_key(bcr_dep, vsn)),
                           ?assertEqual({bcr_dep, "2.0.0"}, bcr_dep_mod:hello())
                   end).

sha256_mismatch_writes_nothing(Config) ->
    Actual = sha(Config, "single.tar.gz"),
    Wrong = binary:copy(<<"ab">>, 32),
    ?assertEqual({error, {sha256_mismatch, #{expected => Wrong, actual => Actual}}},
                 fetch(bcr_single, ?VSN, url(Config, "single.tar.gz"), Wrong, Config)),
    assert_nothing_written(Config).

http_404(Config) ->
    ?assertEqual({error, {http_status, 404}},
                 fetch(bcr_single, ?VSN, url(Config, "missing.tar.gz"), binary:copy(<<"0">>, 64),
                       Config)),
    assert_nothing_written(Config),
    assert_no_messages().

version_mismatch(Config) ->
    ?assertEqual({error, {version_mismatch, <<"9.9.9">>, <<"1.2.0">>}},
                 fetch(bcr_single, <<"9.9.9">>, url(Config, "single.tar.gz"),
                       sha(Config, "single.tar.gz"), Config)),
    assert_nothing_written(Config).

app_not_found(Config) ->
    %% The single layout holds bcr_single only; the rebar3 layout lacks it too.
    ?assertMatch({error, {app_not_found, #{app := other_app, layout := single}}},
                 fetch(other_app, ?VSN, url(Config, "single.tar.gz"),
                       sha(Config, "single.tar.gz"), Config)),
    ?assertMatch({error, {app_not_found, #{app := bcr_single, layout := rebar3_tar}}},
                 fetch(bcr_single, ?VSN, url(Config, "rebar3.tar.gz"),
                       sha(Config, "rebar3.tar.gz"), Config)),
    assert_nothing_written(Config).

dest_exists(Config) ->
    Dest = ?config(dest, Config),
    ok = file:make_dir(Dest),
    ok = file:write_file(filename:join(Dest, "keep"), <<"old">>),
    ?assertEqual({error, {dest_exists, Dest}},
                 fetch(bcr_single, ?VSN, url(Config, "single.tar.gz"),
                       sha(Config, "single.tar.gz"), Config)),
    ?assertEqual({ok, ["keep"]}, file:list_dir(Dest)),
    ?assertEqual({ok, ["release"]}, file:list_dir(?config(parent, Config))).

max_bytes(Config) ->
    {ok, #file_info{size = Size}} =
        file:read_file_info(filename:join(?config(docs, Config), "single.tar.gz")),
    Url = url(Config, "single.tar.gz"),
    Sha = sha(Config, "single.tar.gz"),
    ?assertEqual({error, {too_large, Size - 1}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config, #{max_bytes => Size - 1})),
    assert_nothing_written(Config),
    assert_no_messages(),
    %% Exactly max_bytes is accepted.
    ?assertMatch({ok, _}, fetch(bcr_single, ?VSN, Url, Sha, Config, #{max_bytes => Size})),
    %% Unpacked size is bounded as well.
    ok = file:del_dir_r(?config(dest, Config)),
    ?assertEqual({error, {too_large_unpacked, 100}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config, #{max_unpacked_bytes => 100})),
    assert_nothing_written(Config).

%% Without Content-Length the limit is enforced while streaming.
max_bytes_when_chunked(Config) ->
    {ok, #file_info{size = Size}} =
        file:read_file_info(filename:join(?config(docs, Config), "single.tar.gz")),
    Url = url(Config, "esi/" ++ atom_to_list(?MODULE) ++ ":chunked"),
    Sha = sha(Config, "single.tar.gz"),
    ?assertEqual({error, {too_large, Size - 1}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config, #{max_bytes => Size - 1})),
    assert_nothing_written(Config),
    assert_no_messages(),
    ?assertMatch({ok, _}, fetch(bcr_single, ?VSN, Url, Sha, Config, #{max_bytes => Size})).

%% Names past 100 bytes (ustar prefix or pax headers) are read right: a deep
%% file is unpacked, a long name hiding `..' is refused.
long_names(Config) ->
    Deep = "bcr_single-1.2.0/priv/" ++ lists:duplicate(150, $d) ++ "/f",
    {Url, Sha} = erl_tar_with(Config, "long.tar.gz", [{Deep, <<"deep">>}]),
    ?assertMatch({ok, _}, fetch(bcr_single, ?VSN, Url, Sha, Config)),
    ?assertEqual({ok, <<"deep">>}, file:read_file(filename:join(?config(dest, Config), Deep))),
    ok = file:del_dir_r(?config(dest, Config)),
    Evil = "bcr_single-1.2.0/" ++ lists:duplicate(120, $a) ++ "/../../../evil",
    {Url2, Sha2} = erl_tar_with(Config, "long_evil.tar.gz", [{Evil, <<"boom">>}]),
    ?assertEqual({error, {unsafe_entry, list_to_binary(Evil), parent_reference}},
                 fetch(bcr_single, ?VSN, Url2, Sha2, Config)),
    Evil2 = lists:duplicate(200, $b) ++ "/../../evil",
    {Url3, Sha3} = erl_tar_with(Config, "long_evil2.tar.gz", [{Evil2, <<"boom">>}]),
    ?assertEqual({error, {unsafe_entry, list_to_binary(Evil2), parent_reference}},
                 fetch(bcr_single, ?VSN, Url3, Sha3, Config)),
    assert_nothing_written(Config).

unsafe_dotdot(Config) ->
    Evil = <<"bcr_single-1.2.0/../../evil">>,
    {Url, Sha} = publish(Config, "dotdot.tar.gz",
                         raw_tar(base_entries(Config) ++ [{Evil, regular, <<>>, <<"boom">>}])),
    ?assertEqual({error, {unsafe_entry, Evil, parent_reference}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config)),
    assert_nothing_written(Config),
    ?assertNot(filelib:is_file(filename:join(filename:dirname(?config(parent, Config)), "evil"))),
    %% Built with erl_tar's {NameInArchive, Binary} form too.
    {Url2, Sha2} = erl_tar_with(Config, "dotdot2.tar.gz", [{"../evil", <<"boom">>}]),
    ?assertEqual({error, {unsafe_entry, <<"../evil">>, parent_reference}},
                 fetch(bcr_single, ?VSN, Url2, Sha2, Config)),
    assert_nothing_written(Config).

unsafe_absolute(Config) ->
    {Url, Sha} = erl_tar_with(Config, "abs.tar.gz", [{"/abs/path", <<"boom">>}]),
    ?assertEqual({error, {unsafe_entry, <<"/abs/path">>, absolute_path}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config)),
    assert_nothing_written(Config),
    ?assertNot(filelib:is_file("/abs/path")).

unsafe_symlink_to_etc(Config) ->
    Link = filename:join(?config(root, Config), "etc_link"),
    ok = file:make_symlink("/etc", Link),
    {Url, Sha} = erl_tar_with(Config, "etc.tar.gz", [{"bcr_single-1.2.0/priv/etc", Link}]),
    ?assertEqual({error, {unsafe_entry, <<"bcr_single-1.2.0/priv/etc">>,
                          {absolute_link, <<"/etc">>}}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config)),
    assert_nothing_written(Config).

unsafe_symlink_escapes(Config) ->
    Link = filename:join(?config(root, Config), "up_link"),
    ok = file:make_symlink("../../x", Link),
    %% bcr_single-1.2.0/a -> ../../x resolves to ../x: outside.
    {Url, Sha} = erl_tar_with(Config, "up.tar.gz", [{"bcr_single-1.2.0/a", Link}]),
    ?assertEqual({error, {unsafe_entry, <<"bcr_single-1.2.0/a">>,
                          {link_escapes, <<"../../x">>}}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config)),
    assert_nothing_written(Config).

%% Hostile entries erl_tar will not write, crafted as raw ustar headers.
unsafe_other_entries(Config) ->
    Base = base_entries(Config),
    Cases =
        [%% A hard link to a file outside, by absolute name or by `..'.
         {[{<<"bcr_single-1.2.0/passwd">>, hardlink, <<"/etc/passwd">>, <<>>}],
          {unsafe_entry, <<"bcr_single-1.2.0/passwd">>, {absolute_link, <<"/etc/passwd">>}}},
         {[{<<"bcr_single-1.2.0/up">>, hardlink, <<"../x">>, <<>>}],
          {unsafe_entry, <<"bcr_single-1.2.0/up">>, {link_escapes, <<"../x">>}}},
         %% A hard link must name an earlier regular file of the archive.
         {[{<<"bcr_single-1.2.0/h">>, hardlink, <<"bcr_single-1.2.0/nothing">>, <<>>}],
          {unsafe_entry, <<"bcr_single-1.2.0/h">>,
           {hard_link_target, <<"bcr_single-1.2.0/nothing">>}}},
         {[{<<"bcr_single-1.2.0/fifo">>, fifo, <<>>, <<>>}],
          {unsafe_entry, <<"bcr_single-1.2.0/fifo">>, {special_file, fifo}}},
         %% a -> . is harmless alone, but a/d -> ../x would land outside.
         {[{<<"bcr_single-1.2.0/a">>, symlink, <<".">>, <<>>},
           {<<"bcr_single-1.2.0/a/d">>, symlink, <<"../x">>, <<>>}],
          {unsafe_entry, <<"bcr_single-1.2.0/a/d">>, {below_symlink, <<"bcr_single-1.2.0/a">>}}},
         %% b -> a/../.. looks inside lexically, but a -> .. makes it escape.
         {[{<<"bcr_single-1.2.0/a">>, symlink, <<"..">>, <<>>},
           {<<"bcr_single-1.2.0/b">>, symlink, <<"a/..">>, <<>>}],
          {unsafe_entry, <<"bcr_single-1.2.0/b">>, {link_through_symlink, <<"a/..">>}}},
         %% A file written through a symlink to outside.
         {[{<<"out">>, symlink, <<"/tmp">>, <<>>},
           {<<"out/file">>, regular, <<>>, <<"x">>}],
          {unsafe_entry, <<"out">>, {absolute_link, <<"/tmp">>}}}],
    lists:foreach(
      fun({N, {Extra, Expected}}) ->
              {Url, Sha} = publish(Config, "other" ++ integer_to_list(N) ++ ".tar.gz",
                                   raw_tar(Base ++ Extra)),
              ?assertEqual({N, {error, Expected}},
                           {N, fetch(bcr_single, ?VSN, Url, Sha, Config)}),
              assert_nothing_written(Config)
      end, lists:zip(lists:seq(1, length(Cases)), Cases)).

%% Links that stay inside are kept: symlinks as symlinks, hard links as copies.
safe_links_kept(Config) ->
    Dest = ?config(dest, Config),
    {Url, Sha} = publish(Config, "links.tar.gz",
                         raw_tar(base_entries(Config)
                                 ++ [{<<"bcr_single-1.2.0/priv/link">>, symlink, <<"data.txt">>,
                                      <<>>},
                                     {<<"bcr_single-1.2.0/bin/up">>, symlink,
                                      <<"../priv/data.txt">>, <<>>},
                                     {<<"bcr_single-1.2.0/priv/hard">>, hardlink,
                                      <<"bcr_single-1.2.0/priv/data.txt">>, <<>>}])),
    {ok, #{app_dir := AppDir}} = fetch(bcr_single, ?VSN, Url, Sha, Config),
    ?assertEqual(filename:join(Dest, "bcr_single-1.2.0"), AppDir),
    ?assertEqual({ok, "data.txt"}, file:read_link(filename:join([AppDir, "priv", "link"]))),
    ?assertEqual({ok, <<"payload">>}, file:read_file(filename:join([AppDir, "bin", "up"]))),
    ?assertEqual({ok, <<"payload">>}, file:read_file(filename:join([AppDir, "priv", "hard"]))).

not_a_tarball(Config) ->
    ?assertMatch({error, {bad_archive, _}},
                 fetch(bcr_single, ?VSN, url(Config, "garbage.tar.gz"),
                       sha(Config, "garbage.tar.gz"), Config)),
    assert_nothing_written(Config).

https_needs_the_ca(Config) ->
    Url = iolist_to_binary(["https://localhost:", integer_to_list(?config(https_port, Config)),
                            "/single.tar.gz"]),
    Sha = sha(Config, "single.tar.gz"),
    %% The test CA is not in the system store.
    ?assertMatch({error, {download_failed, _}}, fetch(bcr_single, ?VSN, Url, Sha, Config)),
    assert_nothing_written(Config),
    ?assertMatch({ok, #{app_dir := _}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config,
                       #{ca_file => ?config(ca_file, Config)})),
    ?assert(filelib:is_dir(filename:join([?config(dest, Config), "bcr_single-1.2.0", "ebin"]))),
    %% A CA file without certificates is an error of its own.
    ok = file:del_dir_r(?config(dest, Config)),
    Empty = filename:join(?config(root, Config), "empty.pem"),
    ok = file:write_file(Empty, <<"nothing here\n">>),
    ?assertEqual({error, {bad_ca_file, Empty, no_certificates}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config, #{ca_file => Empty})),
    assert_nothing_written(Config).

https_checks_the_hostname(Config) ->
    %% The certificate names localhost, not 127.0.0.1.
    Url = iolist_to_binary(["https://127.0.0.1:", integer_to_list(?config(https_port, Config)),
                            "/single.tar.gz"]),
    {error, {download_failed, Why}} =
        fetch(bcr_single, ?VSN, Url, sha(Config, "single.tar.gz"), Config,
              #{ca_file => ?config(ca_file, Config)}),
    ?assertMatch({match, _}, re:run(io_lib:format("~p", [Why]), "hostname_check_failed")),
    assert_nothing_written(Config).

redirect_followed(Config) ->
    Url = url(Config, "esi/" ++ atom_to_list(?MODULE) ++ ":redirect"),
    ?assertMatch({ok, #{app_dir := _}},
                 fetch(bcr_single, ?VSN, Url, sha(Config, "single.tar.gz"), Config)),
    ?assert(filelib:is_dir(filename:join([?config(dest, Config), "bcr_single-1.2.0"]))).

download_timeout(Config) ->
    Url = url(Config, "esi/" ++ atom_to_list(?MODULE) ++ ":slow"),
    T0 = erlang:monotonic_time(millisecond),
    ?assertEqual({error, {download_failed, timeout}},
                 fetch(bcr_single, ?VSN, Url, binary:copy(<<"0">>, 64), Config,
                       #{timeout => 300})),
    ?assert(erlang:monotonic_time(millisecond) - T0 < 3000),
    assert_nothing_written(Config),
    assert_no_messages().

invalid_arguments(Config) ->
    Url = url(Config, "single.tar.gz"),
    Sha = sha(Config, "single.tar.gz"),
    ?assertEqual({error, {invalid_argument, sha256, <<"abc">>}},
                 fetch(bcr_single, ?VSN, Url, <<"abc">>, Config)),
    NotHex = binary:copy(<<"zz">>, 32),
    ?assertEqual({error, {invalid_argument, sha256, NotHex}},
                 fetch(bcr_single, ?VSN, Url, NotHex, Config)),
    ?assertEqual({error, {invalid_argument, url, <<"ftp://127.0.0.1/x.tar.gz">>}},
                 fetch(bcr_single, ?VSN, <<"ftp://127.0.0.1/x.tar.gz">>, Sha, Config)),
    ?assertEqual({error, {invalid_argument, max_bytes, 0}},
                 fetch(bcr_single, ?VSN, Url, Sha, Config, #{max_bytes => 0})),
    ?assertEqual({error, {invalid_argument, version, <<>>}},
                 fetch(bcr_single, <<>>, Url, Sha, Config)),
    assert_nothing_written(Config).

%%====================================================================
%% ESI callbacks
%%====================================================================

redirect(SessionId, _Env, _Input) ->
    mod_esi:deliver(SessionId, "status: 302 Found\r\nlocation: /single.tar.gz\r\n\r\n").

%% single.tar.gz in 1000-byte chunks, without Content-Length.
chunked(SessionId, _Env, _Input) ->
    {ok, Bin} = file:read_file(filename:join(persistent_term:get({?MODULE, docs}),
                                             "single.tar.gz")),
    ok = mod_esi:deliver(SessionId, "content-type: application/octet-stream\r\n\r\n"),
    deliver_chunks(SessionId, Bin).

deliver_chunks(_SessionId, <<>>) ->
    ok;
deliver_chunks(SessionId, Bin) ->
    N = min(1000, byte_size(Bin)),
    <<Chunk:N/binary, Rest/binary>> = Bin,
    ok = mod_esi:deliver(SessionId, Chunk),
    deliver_chunks(SessionId, Rest).

slow(SessionId, _Env, _Input) ->
    timer:sleep(5000),
    mod_esi:deliver(SessionId, "content-type: application/octet-stream\r\n\r\nlate").
